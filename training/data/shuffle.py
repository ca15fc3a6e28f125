"""The chunked shuffle: one row order that in-memory and streaming readers share.

Rows of a split file are cut into fixed chunks of ``chunk_rows`` consecutive
rows (the last chunk may be shorter). For an epoch, a generator seeded by
``(seed, epoch)`` first permutes the chunk order, then, visiting chunks in that
order, permutes the rows within each chunk. The epoch's row order is the
concatenation. Batches are consecutive slices of that order.

A streaming reader needs only the chunk being visited in memory (plus the
leftover rows of an unfinished batch), so it reproduces the in-memory order
exactly with bounded memory. ``chunk_rows`` defaults to 65,536, the Parquet
row-group size the synthetic writer uses, so a chunk is one row group.

Rows removed by a filter (a task's ``where``) are dropped from the order after
shuffling, so a filtered split still walks the same chunk plan as the file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK_ROWS = 65_536


def _generator(seed: int, epoch: int) -> np.random.Generator:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))


def chunk_plan(
    n_rows: int, chunk_rows: int, seed: int, epoch: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(chunk index, row permutation within the chunk)`` in visiting order.

    Args:
        n_rows: rows in the split file.
        chunk_rows: rows per chunk (> 0).
        seed: shuffle seed (>= 0).
        epoch: epoch number (>= 0); every epoch has its own order.

    Yields:
        The chunk index ``c`` (rows ``c*chunk_rows ..``) and an ``int64 [len(chunk)]``
        permutation of the chunk's local row positions.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    rng = _generator(seed, epoch)
    n_chunks = -(-n_rows // chunk_rows)
    for chunk in rng.permutation(n_chunks).tolist():
        size = min(chunk_rows, n_rows - chunk * chunk_rows)
        yield chunk, rng.permutation(size).astype(np.int64)


def epoch_order(n_rows: int, chunk_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The full chunked-shuffle row order of an epoch: ``int64 [n_rows]``."""
    parts = [c * chunk_rows + perm for c, perm in chunk_plan(n_rows, chunk_rows, seed, epoch)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


__all__ = ["CHUNK_ROWS", "chunk_plan", "epoch_order"]
