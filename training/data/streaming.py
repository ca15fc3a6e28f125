"""Stream a Parquet split chunk by chunk with bounded memory.

:class:`StreamingSplit` yields exactly the batches an in-memory
:class:`training.data.dataset.EncodedSplit` of the same file yields for the same
``(batch_size, shuffle, seed, epoch)``: it walks the same chunk plan
(:mod:`training.data.shuffle`), reads one chunk's rows from the row groups that
hold them, encodes them with the same encoder, permutes them with the same
permutation and drops the rows a task's ``where`` removes. In memory at any
time: one chunk (raw and encoded) plus fewer than ``batch_size`` leftover rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.contract.features import EncodeReport, FeatureEncoder
from training.data.dataset import Batch, EncodedColumns, encode_columns
from training.data.readers import (
    Columns,
    DataReadError,
    find_data_files,
    join_side_tables,
    read_columns,
    table_to_columns,
)
from training.data.schema import Schema
from training.data.shuffle import CHUNK_ROWS, chunk_plan


class StreamingSplit:
    """A Parquet split read lazily, one chunk of ``chunk_rows`` rows at a time.

    Args:
        path: the split's ``.parquet`` file.
        schema: the log schema.
        encoder: the fitted encoder (fit it on train first, e.g. with a sample
            or the in-memory train split).
        task: restrict to a task's ``where`` rows.
        chunk_rows: chunk size of the chunked shuffle; best equal to the file's
            row-group size, so a chunk is read as one row group.
        name: split name (for messages).
        side_tables: ``users``/``items`` columns to join features the file lacks
            from (see :func:`training.data.readers.join_side_tables`); default:
            the side tables beside the file, read only when the file lacks a
            feature column.
    """

    def __init__(
        self,
        path: str | Path,
        schema: Schema,
        encoder: FeatureEncoder,
        *,
        task: str | None = None,
        chunk_rows: int = CHUNK_ROWS,
        name: str = "",
        side_tables: Mapping[str, Columns] | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix != ".parquet":
            raise DataReadError(f"{self.path}: streaming needs a Parquet file (row groups)")
        if chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
        self.schema = schema
        self.encoder = encoder
        self.chunk_rows = int(chunk_rows)
        self.name = name or self.path.stem
        self.where = schema.task(task).where if task is not None else None
        meta = pq.ParquetFile(self.path).metadata
        self.n_source_rows = meta.num_rows
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._group_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._columns = list(dict.fromkeys(schema.required_columns()))
        self._len: int | None = None
        present = set(pq.read_schema(self.path).names)
        lacking = [f.name for f in schema.features if f.name not in present]
        if side_tables is None and lacking:
            files = find_data_files(self.path.parent)
            side_tables = {n: read_columns(p, schema) for n, p in files.side_tables.items()}
        self.side_tables: Mapping[str, Columns] = side_tables or {}

    def __len__(self) -> int:
        """Rows after the task filter (reads the ``where`` label column once)."""
        if self._len is None:
            if self.where is None:
                self._len = self.n_source_rows
            else:
                column = self.schema.labels[self.where].column
                values = pq.read_table(self.path, columns=[column]).column(column)
                self._len = int(np.sum(np.asarray(values.to_numpy(), dtype=np.float64) == 1))
        return self._len

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def read_rows(self, start: int, stop: int) -> pa.Table:
        """Rows ``[start, stop)`` of the file, reading only the row groups that hold them."""
        first = int(np.searchsorted(self._group_starts, start, side="right")) - 1
        last = int(np.searchsorted(self._group_starts, stop, side="left")) - 1
        groups = list(range(first, max(first, last) + 1))
        pf = pq.ParquetFile(self.path)
        present = set(pf.schema_arrow.names)
        table = pf.read_row_groups(groups, columns=[c for c in self._columns if c in present])
        offset = start - int(self._group_starts[first])
        return table.slice(offset, stop - start)

    def encode_chunk(self, chunk: int, report: EncodeReport | None = None) -> EncodedColumns:
        """Encoded rows of one chunk in file order."""
        start = chunk * self.chunk_rows
        stop = min(start + self.chunk_rows, self.n_source_rows)
        columns = table_to_columns(self.read_rows(start, stop))
        if self.side_tables:
            columns = join_side_tables(self.schema, columns, self.side_tables)
        return encode_columns(self.schema, self.encoder, columns, report)

    def _chunks(self, shuffle: bool, seed: int, epoch: int) -> Iterator[tuple[int, np.ndarray]]:
        if shuffle:
            yield from chunk_plan(self.n_source_rows, self.chunk_rows, seed, epoch)
            return
        n_chunks = -(-self.n_source_rows // self.chunk_rows)
        for chunk in range(n_chunks):
            size = min(self.chunk_rows, self.n_source_rows - chunk * self.chunk_rows)
            yield chunk, np.arange(size, dtype=np.int64)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        report: EncodeReport | None = None,
    ) -> Iterator[Batch]:
        """Yield the same batches as the in-memory split (see the module docstring)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        pending: list[EncodedColumns] = []
        n_pending = 0
        for chunk, perm in self._chunks(shuffle, seed, epoch):
            rows = self.encode_chunk(chunk, report).take(torch.from_numpy(perm))
            if self.where is not None:
                keep = torch.nonzero(rows.labels[self.where] == 1, as_tuple=False).flatten()
                rows = rows.take(keep)
            if len(rows) == 0:
                continue
            pending.append(rows)
            n_pending += len(rows)
            if n_pending < batch_size:
                continue
            merged = EncodedColumns.concat(pending)
            full = (n_pending // batch_size) * batch_size
            for start in range(0, full, batch_size):
                index = torch.arange(start, start + batch_size, dtype=torch.int64)
                yield merged.take(index).to_batch()
            rest = torch.arange(full, n_pending, dtype=torch.int64)
            pending = [merged.take(rest)] if len(rest) else []
            n_pending = len(rest)
        if n_pending:
            yield EncodedColumns.concat(pending).to_batch()


__all__ = ["StreamingSplit"]
