"""One torchrun rank's share of a streamed split: :class:`RankShard`.

:meth:`training.data.streaming.StreamingSplit.for_rank` builds one; each rank
reads only its own chunks of every epoch's chunk plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from training.data.dataset import Batch, EncodedColumns

if TYPE_CHECKING:
    from training.data.streaming import StreamingSplit


class RankShard:
    """One torchrun rank's own chunks of a streamed split: no rank reads the whole log.

    In epoch ``e`` the chunk at position ``i`` of the epoch's chunk plan (a
    function of ``(seed, e)``, the same on every rank) belongs to rank
    ``i mod world_size``; the assignment is deterministic in
    ``(rank, world_size, seed, epoch)`` and every row is read by exactly one
    rank. Every rank yields the same number of batches per epoch,
    ``ceil(len(split) / batch_size)`` (so collectives line up), each rank
    splitting its epoch's rows into that many consecutive local batches of
    near-equal size (an empty one when it has no rows left). The union of the
    ranks' local batches of one step is a global batch of about ``batch_size``
    rows of the shuffled epoch — the same distribution as one process, not the
    same rows, so a run sharded this way is statistically, not bitwise, the
    single-process run.

    ``num_batches`` is the *global* step count; the trainer must not slice
    these batches again (``rank_local`` is true).
    """

    rank_local = True

    def __init__(self, split: StreamingSplit, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.split, self.rank, self.world_size = split, rank, world_size

    def __len__(self) -> int:
        """Rows of the whole split (all ranks)."""
        return len(self.split)

    def num_batches(self, batch_size: int) -> int:
        return self.split.num_batches(batch_size)

    def mine(self, position: int) -> bool:
        """True when the chunk at this plan position belongs to this rank."""
        return position % self.world_size == self.rank

    def local_rows(self, shuffle: bool, seed: int, epoch: int) -> int:
        """Rows this rank reads in an epoch (from the kept mask; no data read)."""
        keep = self.split.kept()
        total = 0
        for position, (chunk, perm) in enumerate(self.split._chunks(shuffle, seed, epoch)):
            if self.mine(position):
                start = chunk * self.split.chunk_rows
                total += len(perm) if keep is None else int(keep[start : start + len(perm)].sum())
        return total

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0
    ) -> Iterator[Batch]:
        """This rank's ``num_batches(batch_size)`` local batches of an epoch."""
        steps = self.num_batches(batch_size)
        rows = self.local_rows(shuffle, seed, epoch)
        sizes = [rows // steps + (k < rows % steps) for k in range(steps)] if steps else []
        blocks = self.split.iter_rows(shuffle, seed, epoch, chunks=self.mine)
        pending: EncodedColumns | None = None
        for size in sizes:
            while pending is None or len(pending) < size:
                block = next(blocks, None)
                if block is None:
                    break
                pending = block if pending is None else EncodedColumns.concat([pending, block])
            if pending is None:  # no rows at all on this rank: empty local batches
                pending = self.split.encode_chunk(0).take(torch.zeros(0, dtype=torch.int64))
            yield pending.take(torch.arange(size, dtype=torch.int64)).to_batch()
            pending = pending.take(torch.arange(size, len(pending), dtype=torch.int64))


__all__ = ["RankShard"]
