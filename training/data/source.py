"""A split as a sequence of row pieces: one Parquet file, a directory, or a Hive dataset.

A split of a data directory is one of

* ``train.parquet`` (or ``train.csv``) — a single file;
* ``train/`` — a directory of Parquet files (``part-0.parquet``, ...), read in
  sorted path order;
* ``train/day=2026-11-30/part-0.parquet`` — a Hive-partitioned dataset: the
  ``key=value`` folder names become columns (typed by ``pyarrow.dataset``'s
  Hive inference: integers → ``int32``, otherwise strings) usable as ids,
  labels or features like any file column.

:class:`SplitSource` numbers the rows of all files consecutively (files in
sorted relative-path order, row groups in file order) and cuts them into
*pieces*, one per Parquet row group. Readers ask for row ranges
(:meth:`SplitSource.read_rows`) or walk the split in chunks
(:meth:`SplitSource.iter_tables`); only the row groups overlapping a range are
read, and only the columns asked for. A CSV split is one piece read whole (CSV
has no row groups; streaming needs Parquet).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

PARQUET = ".parquet"


class SourceError(ValueError):
    """A split path cannot be read as a split; the message names it."""


@dataclass(frozen=True)
class Piece:
    """One Parquet row group of a split.

    Attributes:
        file: the Parquet file.
        row_group: index of the row group in the file.
        rows: rows in the row group.
        partition: ``{column: value}`` of the file's Hive folders (empty otherwise).
    """

    file: Path
    row_group: int
    rows: int
    partition: tuple[tuple[str, object], ...] = ()


def split_files(path: Path) -> list[Path]:
    """The Parquet files of a split path (a file, or every ``*.parquet`` below a
    directory, hidden files and folders excluded), in sorted relative-path order."""
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob(f"*{PARQUET}")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise SourceError(f"{path}: a split directory must hold .parquet files; found none")
    return files


def file_stamps(paths: Iterable[Path]) -> list[list[object]]:
    """``[path, size, mtime_ns]`` of every file of the given split/side-table paths
    (each file of a directory), for cache keys."""
    stamps: list[list[object]] = []
    for path in sorted(paths):
        for file in split_files(path) if path.is_dir() else [path]:
            stat = file.stat()
            stamps.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return stamps


class SplitSource:
    """The rows of one split, addressable by range without reading the rest.

    Args:
        path: a ``.parquet`` file, a ``.csv`` file, or a directory of Parquet
            files (Hive ``key=value`` folders become columns).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"split not found: {self.path}")
        self.is_csv = self.path.is_file() and self.path.suffix == ".csv"
        if self.is_csv:
            self._dataset = None
            self.pieces: list[Piece] = []
            self.partition_columns: list[str] = []
            return
        if self.path.is_file() and self.path.suffix != PARQUET:
            raise SourceError(f"{self.path}: unknown format (expected .parquet or .csv)")
        files = split_files(self.path)
        base = self.path if self.path.is_dir() else self.path.parent
        try:
            self._dataset = ds.dataset(
                [str(f) for f in files],
                format="parquet",
                partitioning="hive" if self.path.is_dir() else None,
                partition_base_dir=str(base),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.path}: cannot read: {exc}") from exc
        pieces: list[Piece] = []
        partition_names: list[str] = []
        for fragment in self._dataset.get_fragments():
            keys = ds.get_partition_keys(fragment.partition_expression)
            for name in keys:
                if name not in partition_names:
                    partition_names.append(name)
            partition = tuple(sorted(keys.items()))
            meta = fragment.metadata
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                pieces.append(Piece(Path(fragment.path), group, rows, partition))
        self.pieces = pieces
        self.partition_columns = partition_names
        self._file_columns = [n for n in self._dataset.schema.names if n not in partition_names]
        self._starts = np.concatenate([[0], np.cumsum([p.rows for p in pieces], dtype=np.int64)])

    # ----------------------------------------------------------------- shape
    @property
    def columns(self) -> list[str]:
        """Every column of the split (file columns, then Hive partition columns)."""
        if self._dataset is None:
            import csv

            with self.path.open(newline="") as fh:
                return next(csv.reader(fh), [])
        return list(self._dataset.schema.names)

    @property
    def num_rows(self) -> int:
        if self._dataset is None:
            raise SourceError(f"{self.path}: a CSV split has no row count without reading it")
        return int(self._starts[-1])

    @property
    def streamable(self) -> bool:
        """True for Parquet splits (row groups can be read one at a time)."""
        return self._dataset is not None

    # ----------------------------------------------------------------- reading
    def read_all(self, columns: Iterable[str] | None = None) -> pa.Table:
        """Every row of the requested columns (present ones only)."""
        assert self._dataset is not None, "CSV splits are read by readers.read_table"
        return self._dataset.to_table(columns=self._present(columns))

    def read_rows(self, start: int, stop: int, columns: Iterable[str] | None = None) -> pa.Table:
        """Rows ``[start, stop)`` of the split, reading only the row groups that hold them."""
        assert self._dataset is not None, "CSV splits cannot be read by row range"
        stop = min(stop, self.num_rows)
        wanted = self._present(columns)
        if stop <= start:
            return self._dataset.schema.empty_table().select(wanted)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop, side="left")) - 1
        tables = []
        for index in range(first, max(first, last) + 1):
            piece = self.pieces[index]
            lo = max(start, int(self._starts[index])) - int(self._starts[index])
            hi = min(stop, int(self._starts[index + 1])) - int(self._starts[index])
            tables.append(self._read_piece(piece, wanted).slice(lo, hi - lo))
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def iter_tables(
        self, chunk_rows: int, columns: Iterable[str] | None = None
    ) -> Iterator[pa.Table]:
        """The split in file order, ``chunk_rows`` rows at a time (the last may be shorter)."""
        if chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
        wanted = list(columns) if columns is not None else None
        for start in range(0, self.num_rows, chunk_rows):
            yield self.read_rows(start, start + chunk_rows, wanted)

    def _present(self, columns: Iterable[str] | None) -> list[str]:
        assert self._dataset is not None
        names = self._dataset.schema.names
        if columns is None:
            return list(names)
        present = set(names)
        return [c for c in dict.fromkeys(columns) if c in present]

    def _read_piece(self, piece: Piece, wanted: list[str]) -> pa.Table:
        import pyarrow.parquet as pq

        file_cols = [c for c in wanted if c in self._file_columns]
        table = pq.ParquetFile(piece.file).read_row_group(piece.row_group, columns=file_cols)
        parts = dict(piece.partition)
        schema = self._dataset.schema if self._dataset is not None else None
        arrays, names = [], []
        for name in wanted:
            if name in parts:
                typ = schema.field(name).type if schema is not None else None
                arrays.append(pa.repeat(pa.scalar(parts[name], type=typ), table.num_rows))
            else:
                arrays.append(table.column(name))
            names.append(name)
        return pa.table(arrays, names=names)


__all__ = ["Piece", "SourceError", "SplitSource", "file_stamps", "split_files"]
