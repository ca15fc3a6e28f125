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

The request shuffle (``data.shuffle_unit: requests``, :func:`request_plan`)
permutes whole requests instead of rows: the epoch's order lists every row of
one request together, and batch boundaries move back to the nearest request
boundary, so every batch holds whole requests (a request larger than a batch is
the one exception: it is cut) and the listwise hint sees complete lists. The
number of batches stays ``ceil(N / batch_size)``.
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


def request_plan(
    group: np.ndarray, batch_size: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The request-grouped order of an epoch and its batch boundaries.

    Args:
        group: request id per row, ``int64 [N]`` (any order; equal ids = one request).
        batch_size: target rows per batch (> 0).
        seed, epoch: the order is a function of both (>= 0).

    Returns:
        ``(order int64 [N], starts int64 [n_batches + 1])``: batch ``k`` is rows
        ``order[starts[k]:starts[k + 1]]``; ``n_batches = ceil(N / batch_size)``.
        Within a request, rows keep their split order.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    group = np.asarray(group).ravel()
    n = group.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    _, request = np.unique(group, return_inverse=True)
    rank = _generator(seed, epoch).permutation(int(request.max()) + 1)
    # rows sorted by their request's random rank; stable, so split order within a request
    order = np.argsort(rank[request], kind="stable").astype(np.int64)
    sorted_requests = rank[request][order]
    boundaries = np.flatnonzero(np.diff(sorted_requests)) + 1  # first row of each request
    n_batches = -(-n // batch_size)
    targets = np.arange(1, n_batches, dtype=np.int64) * batch_size
    # the last request boundary at or before each multiple of batch_size ...
    idx = np.searchsorted(boundaries, targets, side="right") - 1
    cuts = np.where(idx >= 0, boundaries[np.maximum(idx, 0)], 0)
    # ... unless a request longer than a batch leaves none: then cut it at the multiple
    previous = np.concatenate([[0], targets[:-1]])
    cuts = np.where(cuts > previous, cuts, targets)
    cuts = np.maximum.accumulate(cuts)
    starts = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    return order, starts


__all__ = ["CHUNK_ROWS", "chunk_plan", "epoch_order", "request_plan"]
