"""Data-parallel training on ``torch.distributed``: N processes, the results of one.

The trainer (:func:`training.loop.trainer.train`) takes a :class:`DistContext` and
calls it at the few points where N processes differ from one:

* **data** — :meth:`DistContext.shard_batches`: every rank iterates the *same*
  global batches (the data layer's chunked shuffle, a function of seed and
  epoch) and keeps rows ``[r·b/N, (r+1)·b/N)`` of each global batch of ``b``
  rows, so the union of the ranks' batches is the single-process batch and
  the data position (epoch, global batch index) is the same on every rank;
* **gradients** — :meth:`DistContext.sync_step` after ``backward``: each rank's
  gradient is that of its local *mean* loss; weighting it by
  ``local_rows / global_rows`` and summing over ranks gives the gradient of
  the global-batch mean, i.e. the single-process gradient up to float
  summation order (``training.loop.gradient_sync``). Dense gradients travel
  in one flat all-reduce bucket; sparse embedding gradients
  (``model.sparse: true``) are coalesced per rank
  and all-gathered as (row index, row gradient) pairs — only the rows a batch
  touched, never the whole table. The logged loss terms ride in the same
  bucket, so every rank sees the global-batch loss (and a NaN on one rank
  stops every rank at the same step);
* **evaluation** — :meth:`DistContext.all_predictions`: each rank scores a
  contiguous slice of the split, the logits are all-gathered in split order
  and every rank computes the metrics of the *whole* split (AUC of the union,
  not a mean of per-rank AUCs). Every rank gets them so early stopping agrees;
* **outputs** — :attr:`DistContext.is_main`: rank 0 alone writes checkpoints,
  logs, metrics and plots. A checkpoint holds the global data position, so one
  saved by N processes resumes with M.

:data:`SINGLE_PROCESS` is the context of an ordinary run: every hook is the
identity. :func:`init_from_env` builds the right one from the environment
``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``).

Not supported with more than one process (refused by :meth:`DistContext.check_config`
with a message): the ``listwise`` hint (its per-request softmax needs whole
requests on one rank, which a row slice of the global batch does not give)
and ``model.norm: batch`` (batch statistics would be per-rank). Dropout works
but draws per-rank masks, so such a run is not bit-comparable with one process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor

from training.loop.errors import DistributedError
from training.loop.gradient_sync import sync_gradients

if TYPE_CHECKING:
    from training.config.run import RunConfig
    from training.data.dataset import Batch, EncodedSplit
    from training.distill.losses import LossTerms

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def shard_bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a ``rows``-row block that rank ``rank`` owns.

    Contiguous, balanced to within one row, in rank order, and covering the
    block exactly once — so concatenating the ranks' slices rebuilds it.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    return rank * rows // world_size, (rank + 1) * rows // world_size


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``[start, stop)`` of every tensor of ``batch`` (views, no copy)."""
    return dataclasses.replace(
        batch,
        features={k: v[start:stop] for k, v in batch.features.items()},
        labels={k: v[start:stop] for k, v in batch.labels.items()},
        group=batch.group[start:stop],
        user=batch.user[start:stop],
    )


@dataclass
class DistContext:
    """Who this process is in a data-parallel run; the hooks the trainer calls.

    Attributes:
        rank: this process, ``0 ≤ rank < world_size``.
        world_size: number of processes (1 = ordinary run, every hook a no-op).
        local_rank: index on this machine (selects the GPU under NCCL).
        backend: ``"gloo"`` or ``"nccl"`` (``None`` when ``world_size == 1``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def comm_device(self) -> torch.device:
        """Where collective buffers live: NCCL only moves CUDA tensors."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    # ------------------------------------------------------------------ config
    def check_config(self, cfg: RunConfig) -> None:
        """Refuse configs whose N-process run would not be the single-process run."""
        if not self.distributed:
            return
        from training.distill.rules import Hint

        if cfg.distill.resolved_hint is Hint.LISTWISE:
            raise DistributedError(
                "distill.hint 'listwise' needs whole requests in one process, but distributed "
                "training splits every global batch by rows; train it with one process "
                "(no --nproc) or pick a pointwise hint (logit_mse, soft_bce, kl, hidden)"
            )
        if cfg.model.norm == "batch":
            raise DistributedError(
                "model.norm 'batch' computes batch statistics per process, so N processes "
                "would not train the single-process model; use norm 'layer' or 'none', or "
                "train with one process"
            )
        if cfg.model.dropout > 0 and self.is_main:
            log.warning(
                "model.dropout %.3g: each process draws its own dropout masks, so this run "
                "is not comparable bit for bit with a single-process run",
                cfg.model.dropout,
            )

    # ------------------------------------------------------------------ data
    def shard_batches(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """This rank's slice of each global batch; one local batch per global batch.

        A global batch smaller than the world (a short last batch) leaves some
        ranks an empty slice; :meth:`sync_step` handles them.
        """
        if not self.distributed:
            yield from batches
            return
        for batch in batches:
            start, stop = shard_bounds(len(batch), self.rank, self.world_size)
            yield slice_batch(batch, start, stop)

    # ------------------------------------------------------------------ gradients
    def sync_step(
        self, model: torch.nn.Module, terms: LossTerms, local_rows: int
    ) -> tuple[LossTerms, int]:
        """Turn this rank's gradients into the global-batch gradients, in place.

        Call after ``terms.total.backward()`` and before clipping and the
        optimiser step. Each parameter's ``.grad`` becomes
        ``Σ_r (n_r / n) · g_r`` (``n_r`` rows on rank r, ``n = Σ n_r``); a
        parameter no rank produced a gradient for keeps ``grad = None`` (so
        optimisers skip it exactly as they would in one process).

        Args:
            model: the trained module; parameters with ``requires_grad``.
            terms: this rank's loss terms (means over its ``local_rows`` rows).
            local_rows: rows of this rank's batch (may be 0).

        Returns:
            ``(terms of the global batch (detached), global rows)``.
        """
        if not self.distributed:
            return terms, local_rows
        return sync_gradients(self, model, terms, local_rows)

    # ------------------------------------------------------------------ evaluation
    def all_predictions(
        self,
        predict: Callable[..., dict[str, np.ndarray]],
        model: torch.nn.Module,
        split: EncodedSplit,
        batch_size: int,
        **kwargs: Any,
    ) -> dict[str, np.ndarray]:
        """``predict(model, split, batch_size, **kwargs)`` over the whole split.

        Each rank scores its contiguous slice (:func:`shard_bounds`); the
        slices are all-gathered in rank order, which is split order, so the
        result equals a single process's ``predict`` up to float rounding.
        """
        if not self.distributed:
            return predict(model, split, batch_size, **kwargs)
        n = len(split)
        start, stop = shard_bounds(n, self.rank, self.world_size)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[start:stop] = True
        local = (
            predict(model, split.filter_rows(mask), batch_size, **kwargs) if stop > start else {}
        )
        names = sorted(local) if local else None
        names = self._agree_on_names(names)
        sizes = [shard_bounds(n, r, self.world_size) for r in range(self.world_size)]
        width = max(b - a for a, b in sizes)
        buf = torch.zeros(len(names), width, dtype=torch.float64)
        for i, name in enumerate(names):
            buf[i, : stop - start] = torch.from_numpy(np.asarray(local[name], dtype=np.float64))
        parts = self._all_gather(buf)
        return {
            name: torch.cat([p[i, : b - a] for p, (a, b) in zip(parts, sizes, strict=True)])
            .numpy()
            .copy()
            for i, name in enumerate(names)
        }

    def _agree_on_names(self, names: list[str] | None) -> list[str]:
        gathered: list[Any] = [None] * self.world_size
        tdist.all_gather_object(gathered, names)
        known = [g for g in gathered if g is not None]
        if not known:
            raise DistributedError("no process had rows to evaluate (empty split)")
        return known[0]

    # ------------------------------------------------------------------ collectives
    def _all_gather(self, tensor: Tensor) -> list[Tensor]:
        device = self.comm_device
        local = tensor.to(device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        tdist.all_gather(parts, local)
        return [p.cpu() for p in parts]

    def _all_reduce_sum(self, tensor: Tensor) -> Tensor:
        buf = tensor.to(self.comm_device)
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        return buf.cpu()

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            tdist.barrier()

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self, wait: timedelta = timedelta(seconds=60)) -> None:
        """Tear the process group down (idempotent).

        Ranks first meet at a barrier: a rank that destroys its gloo group while
        another is still writing a checkpoint or inside a collective can make the
        other abort ("terminate called without an active exception"). The gloo
        barrier has a deadline, so a crashed peer costs ``wait`` and never hangs.
        """
        if not (self.distributed and tdist.is_initialized()):
            return
        try:
            if tdist.get_backend() == "gloo":
                tdist.monitored_barrier(timeout=wait)
            else:
                tdist.barrier()
        except RuntimeError as exc:  # a peer died: tear down anyway
            log.warning("rank %d: peers did not reach the final barrier: %s", self.rank, exc)
        tdist.destroy_process_group()


SINGLE_PROCESS = DistContext()


def init_from_env(
    backend: str | None = None, timeout: timedelta = timedelta(minutes=10)
) -> DistContext:
    """The context of this process, joining the process group when launched by torchrun.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is an ordinary run:
    :data:`SINGLE_PROCESS`, no process group.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default gloo — the trainer keeps its
            tensors on the CPU, which only gloo reduces. NCCL needs a GPU per
            local rank (buffers are then staged on ``cuda:LOCAL_RANK``).
        timeout: how long a collective may wait for a missing rank before failing.

    Raises:
        DistributedError: torchrun's variables are incomplete or malformed.
    """
    world = os.environ.get("WORLD_SIZE")
    if world is None or world.strip() == "1":
        return SINGLE_PROCESS
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
            "(or `rocketrank train --nproc N`), which sets them"
        )
    try:
        rank, world_size = int(os.environ["RANK"]), int(world)
        local_rank = int(os.environ["LOCAL_RANK"])
    except ValueError as exc:
        raise DistributedError(f"malformed torchrun environment: {exc}") from exc
    backend = backend or "gloo"
    if backend not in ("gloo", "nccl"):
        raise DistributedError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise DistributedError("backend 'nccl' needs CUDA; use gloo on CPU")
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, timeout=timeout)
    if tdist.get_world_size() != world_size or tdist.get_rank() != rank:
        raise DistributedError("process group does not match RANK/WORLD_SIZE")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


__all__ = [
    "SINGLE_PROCESS",
    "DistContext",
    "init_from_env",
    "shard_bounds",
    "slice_batch",
]
