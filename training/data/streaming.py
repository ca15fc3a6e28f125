"""Stream a Parquet split chunk by chunk with bounded memory.

:class:`StreamingSplit` yields exactly the batches an in-memory
:class:`training.data.dataset.EncodedSplit` of the same rows yields for the same
``(batch_size, shuffle, seed, epoch)``: it walks the same chunk plan
(:mod:`training.data.shuffle`), reads one chunk's rows from the row groups that
hold them (a split may be one file, a directory of files or a Hive dataset, see
:mod:`training.data.source`), encodes them with the same encoder, permutes them
with the same permutation and drops the rows a task's ``where`` removes. In
memory at any time: one chunk (raw and encoded) plus fewer than ``batch_size``
leftover rows, and one byte per row of the row-selection mask.

It also serves evaluation: ``labels``, ``user`` and ``group`` (what the metrics
need per row, read column-wise in chunks, never the features) and
``filter_rows`` (a row subset, e.g. one rank's slice), so
``training.loop.evaluation.evaluate_model`` scores a streamed split in chunks
of ``eval_batch_size`` rows with predictions the only per-row state.

With ``cache_dir`` each encoded chunk is written once (``chunk-<k>.pt``) and
read back by later epochs and runs instead of decoding and encoding the
Parquet rows again: the encoded-split cache, chunk by chunk.

:meth:`StreamingSplit.for_rank` gives one torchrun rank its own share of the
chunks (see :class:`training.data.rank_shard.RankShard`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from models.contract.features import EncodeReport, FeatureEncoder
from training.data.arrow_encode import encode_table
from training.data.chunk_cache import load_chunk, save_chunk
from training.data.data_dir import find_data_files
from training.data.dataset import Batch, EncodedColumns, _int_ids, encode_columns
from training.data.heap import release_freed_memory
from training.data.prefetch import prefetched
from training.data.rank_shard import RankShard
from training.data.readers import (
    Columns,
    DataReadError,
    join_side_tables,
    read_columns,
    table_to_columns,
)
from training.data.schema import Schema
from training.data.shuffle import CHUNK_ROWS, chunk_plan
from training.data.source import SourceError, SplitSource


def chunk_ranges(n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of every chunk of a split in file order."""
    return [(s, min(s + chunk_rows, n_rows)) for s in range(0, n_rows, chunk_rows)]


class StreamingSplit:
    """A Parquet split read lazily, one chunk of ``chunk_rows`` rows at a time.

    Args:
        path: the split (a ``.parquet`` file or a directory of them), or a
            :class:`~training.data.source.SplitSource` of it.
        schema: the log schema.
        encoder: the fitted encoder (``training.data.fit`` fits one in a
            bounded-memory pass).
        task: restrict to a task's ``where`` rows.
        chunk_rows: chunk size of the chunked shuffle; best a multiple of the
            row-group size, so a chunk reads whole row groups.
        name: split name (for messages).
        side_tables: ``users``/``items`` columns to join features the split lacks
            from (see :func:`training.data.readers.join_side_tables`); default:
            the side tables of the data directory, read only when the split lacks
            a feature column.
        cache_dir: write each encoded chunk here once and read it back later.
        prefetch: chunks read and encoded ahead on a background thread while
            the current one is consumed (:func:`training.data.prefetch.prefetched`;
            0 = on the caller's thread). The batches do not depend on it.
    """

    def __init__(
        self,
        path: str | Path | SplitSource,
        schema: Schema,
        encoder: FeatureEncoder,
        *,
        task: str | None = None,
        chunk_rows: int = CHUNK_ROWS,
        name: str = "",
        side_tables: Mapping[str, Columns] | None = None,
        cache_dir: str | Path | None = None,
        prefetch: int = 1,
    ) -> None:
        try:
            self.source = path if isinstance(path, SplitSource) else SplitSource(path)
        except SourceError as exc:
            raise DataReadError(str(exc)) from exc
        self.path = self.source.path
        if not self.source.streamable:
            raise DataReadError(f"{self.path}: streaming needs Parquet (row groups)")
        if chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
        self.schema = schema
        self.encoder = encoder
        self.chunk_rows = int(chunk_rows)
        self.name = name or self.path.stem
        self.where = schema.task(task).where if task is not None else None
        self.n_source_rows = self.source.num_rows
        self._columns = list(dict.fromkeys(schema.required_columns()))
        present = set(self.source.columns)
        lacking = [f.name for f in schema.features if f.name not in present]
        if side_tables is None and lacking:
            root = self.path if self.path.is_dir() else self.path.parent
            for candidate in (root, root.parent):
                files = find_data_files(candidate)
                if files.side_tables:
                    side_tables = {n: read_columns(p, schema) for n, p in files.side_tables.items()}
                    break
        self.side_tables: Mapping[str, Columns] = side_tables or {}
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.prefetch = int(prefetch)
        # bool [n_source_rows] of selected rows (None: every row); the task filter is separate
        self._selection: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._keys: dict[str, Tensor] | None = None

    # ----------------------------------------------------------------- rows kept
    def kept(self) -> np.ndarray | None:
        """``bool [n_source_rows]``: rows of the split this view yields (None = all)."""
        if self._keep is None and (self.where is not None or self._selection is not None):
            keep = np.ones(self.n_source_rows, dtype=bool)
            if self.where is not None:
                column = self.schema.labels[self.where].column
                parts = [
                    np.asarray(t.column(column).to_numpy(zero_copy_only=False), np.float64) == 1
                    for t in self.source.iter_tables(self.chunk_rows, [column])
                ]
                keep &= np.concatenate(parts) if parts else keep
            if self._selection is not None:
                keep &= self._selection
            self._keep = keep
        return self._keep

    def __len__(self) -> int:
        """Rows after the task filter and any row selection."""
        keep = self.kept()
        return self.n_source_rows if keep is None else int(keep.sum())

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def filter_rows(self, mask: Tensor | np.ndarray) -> StreamingSplit:
        """Keep the rows where ``mask`` (``bool [len(self)]``) is true (still streamed)."""
        mask_np = np.asarray(torch.as_tensor(mask, dtype=torch.bool).numpy(), dtype=bool)
        if mask_np.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), got {mask_np.shape}")
        keep = self.kept()
        selection = np.zeros(self.n_source_rows, dtype=bool)
        rows = np.arange(self.n_source_rows) if keep is None else np.flatnonzero(keep)
        selection[rows[mask_np]] = True
        out = self._copy()
        out._selection = selection
        return out

    def _copy(self) -> StreamingSplit:
        out = object.__new__(StreamingSplit)
        out.__dict__.update(self.__dict__)
        out._keep = None
        out._keys = None
        return out

    # ----------------------------------------------------------------- metric columns
    def _key_columns(self) -> dict[str, Tensor]:
        """Labels, user and group of the kept rows, read column-wise in chunks."""
        if self._keys is None:
            labels = {n: lab.column for n, lab in self.schema.labels.items()}
            request = self.schema.ids.request
            names = [*labels.values(), self.schema.ids.user]
            if request and request in self.source.columns:
                names.append(request)
            else:
                request = None
            keep = self.kept()
            parts: dict[str, list[np.ndarray]] = {n: [] for n in [*labels, "user", "group"]}
            for (start, stop), table in zip(
                chunk_ranges(self.n_source_rows, self.chunk_rows),
                self.source.iter_tables(self.chunk_rows, names),
                strict=True,
            ):
                cols = table_to_columns(table)
                rows = slice(None) if keep is None else keep[start:stop]
                for name, column in labels.items():
                    parts[name].append(np.asarray(cols[column], dtype=np.float32)[rows])
                user = _int_ids(cols[self.schema.ids.user])[rows]
                parts["user"].append(user)
                parts["group"].append(_int_ids(cols[request])[rows] if request else user)
            self._keys = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items() if v}
        return self._keys

    @property
    def labels(self) -> dict[str, Tensor]:
        """Label name → ``float32 [N]`` of the kept rows (no features are read)."""
        keys = self._key_columns()
        return {n: keys[n] for n in self.schema.labels}

    @property
    def user(self) -> Tensor:
        """``int64 [N]`` raw user ids of the kept rows."""
        return self._key_columns()["user"]

    @property
    def group(self) -> Tensor:
        """``int64 [N]`` request ids (user ids without a request column)."""
        return self._key_columns()["group"]

    # ----------------------------------------------------------------- chunks
    def read_rows(self, start: int, stop: int) -> pa.Table:
        """Rows ``[start, stop)`` of the needed columns, reading only the row groups
        that hold them."""
        return self.source.read_rows(start, stop, self._columns)

    def read_columns(self, start: int, stop: int) -> Columns:
        """Canonical columns of rows ``[start, stop)`` (side tables joined)."""
        columns = table_to_columns(self.read_rows(start, stop))
        if self.side_tables:
            columns = join_side_tables(self.schema, columns, self.side_tables)
        return columns

    def encode_chunk(self, chunk: int, report: EncodeReport | None = None) -> EncodedColumns:
        """Encoded rows of one chunk in file order (from the chunk cache when present)."""
        cached = self._cache_path(chunk)
        if cached is not None and report is None and cached.is_file():
            with contextlib.suppress(Exception):  # a corrupt chunk is re-encoded
                return load_chunk(cached)
        start = chunk * self.chunk_rows
        stop = min(start + self.chunk_rows, self.n_source_rows)
        if report is None:
            encoded = encode_table(
                self.schema, self.encoder, self.read_rows(start, stop), self.side_tables
            )
        else:  # counting imputed and OOV values per row: the canonical path
            columns = self.read_columns(start, stop)
            encoded = encode_columns(self.schema, self.encoder, columns, report)
        release_freed_memory()  # the chunk's Arrow buffers and the previous chunk are gone
        if cached is not None:
            save_chunk(cached, encoded)
        return encoded

    def _cache_path(self, chunk: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"chunk-{chunk}.pt"

    def _chunks(self, shuffle: bool, seed: int, epoch: int) -> Iterator[tuple[int, np.ndarray]]:
        if shuffle:
            yield from chunk_plan(self.n_source_rows, self.chunk_rows, seed, epoch)
            return
        for chunk, (start, stop) in enumerate(chunk_ranges(self.n_source_rows, self.chunk_rows)):
            yield chunk, np.arange(stop - start, dtype=np.int64)

    def iter_rows(
        self,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        report: EncodeReport | None = None,
        chunks: Callable[[int], bool] | None = None,
    ) -> Iterator[EncodedColumns]:
        """Encoded kept rows of each visited chunk, in the epoch's order.

        Args:
            chunks: visit only the chunks at plan positions ``i`` with
                ``chunks(i)`` true (a rank's share); default every chunk.
        """
        for block, order in self._blocks(shuffle, seed, epoch, report, chunks):
            yield block.take(order)

    def _blocks(
        self,
        shuffle: bool,
        seed: int,
        epoch: int,
        report: EncodeReport | None = None,
        chunks: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[EncodedColumns, Tensor]]:
        """``(encoded chunk in file order, int64 order of its kept rows)`` per visited chunk,
        the next one prepared while the caller consumes this one (``prefetch``)."""
        keep = self.kept()  # on the caller's thread: len() and the thread share it
        return prefetched(
            self._read_blocks(keep, shuffle, seed, epoch, report, chunks), self.prefetch
        )

    def _read_blocks(
        self,
        keep: np.ndarray | None,
        shuffle: bool,
        seed: int,
        epoch: int,
        report: EncodeReport | None,
        chunks: Callable[[int], bool] | None,
    ) -> Iterator[tuple[EncodedColumns, Tensor]]:
        for position, (chunk, perm) in enumerate(self._chunks(shuffle, seed, epoch)):
            if chunks is not None and not chunks(position):
                continue
            start = chunk * self.chunk_rows
            if keep is not None:
                perm = perm[keep[start + perm]]
                if len(perm) == 0:
                    continue
            yield self.encode_chunk(chunk, report), torch.from_numpy(perm)

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
        yield from _rebatch(self._blocks(shuffle, seed, epoch, report), batch_size)

    def for_rank(self, rank: int, world_size: int) -> RankShard:
        """This rank's share of the chunks (see :class:`RankShard`)."""
        return RankShard(self, rank, world_size)


def _rebatch(blocks: Iterator[tuple[EncodedColumns, Tensor]], batch_size: int) -> Iterator[Batch]:
    """Consecutive batches of ``batch_size`` rows over ``(block, row order)`` pairs.

    Each batch gathers its rows straight from the block in file order (no
    permuted copy of a whole chunk); only a batch that straddles two blocks
    concatenates (fewer than ``batch_size`` leftover rows with the next block's head).
    """
    pending: EncodedColumns | None = None  # fewer than batch_size rows
    for block, order in blocks:
        start = 0
        if pending is not None:
            head = block.take(order[: batch_size - len(pending)])
            pending = EncodedColumns.concat([pending, head])
            start = len(head)
            if len(pending) < batch_size:
                continue
            yield pending.to_batch()
            pending = None
        while len(order) - start >= batch_size:
            yield block.take(order[start : start + batch_size]).to_batch()
            start += batch_size
        if start < len(order):
            pending = block.take(order[start:])
    if pending is not None and len(pending):
        yield pending.to_batch()


__all__ = ["StreamingSplit", "chunk_ranges"]
