"""Gradient sync of one data-parallel step: every rank's gradients become the global batch's.

:meth:`training.loop.distributed.DistContext.sync_step` calls :func:`sync_gradients`
after ``backward``. Each rank's gradient is that of its local *mean* loss; weighted
by ``local_rows / global_rows`` and summed over ranks it is the gradient of the
global-batch mean. Dense gradients (and the logged loss terms) travel in one flat
all-reduce bucket; sparse embedding gradients are all-gathered as (row index, row
gradient) pairs, only the rows a batch touched. The rank layout of the global batch
is :func:`training.loop.distributed.shard_bounds`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from training.loop.errors import DistributedError

if TYPE_CHECKING:
    from training.distill.losses import LossTerms
    from training.loop.distributed import DistContext


def _trainable(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], set[int]]:
    """Trainable parameters in a rank-independent order, and the ids of sparse-grad ones."""
    params = [p for p in model.parameters() if p.requires_grad]
    sparse_ids: set[int] = set()
    if getattr(getattr(model, "args", None), "sparse", False) and hasattr(
        model, "embedding_parameters"
    ):
        # tables under ``model.sparse_min_rows`` have dense gradients: they go in the dense bucket
        tables = getattr(model, "sparse_gradient_parameters", model.embedding_parameters)
        sparse_ids = {id(p) for _, p in tables()}
    return params, sparse_ids


def sync_gradients(
    ctx: DistContext, model: torch.nn.Module, terms: LossTerms, local_rows: int
) -> tuple[LossTerms, int]:
    """The body of :meth:`DistContext.sync_step` with more than one process.

    Args:
        ctx: this process's context (``world_size > 1``).
        model: the trained module; parameters with ``requires_grad``.
        terms: this rank's loss terms (scalar means over its ``local_rows`` rows).
        local_rows: rows of this rank's batch (may be 0).

    Returns:
        ``(terms of the global batch (detached), global rows)``; every ``.grad``
        is the global-batch gradient, ``None`` where no rank produced one.
    """
    params, sparse_ids = _trainable(model)
    dense = [p for p in params if id(p) not in sparse_ids]
    sparse = [p for p in params if id(p) in sparse_ids]

    # one bucket: [rows, has-grad flags (dense + sparse), loss terms, dense grads]; the
    # weight n_r/n needs n, so rows go first in a tiny reduce of their own
    rows = int(ctx._all_reduce_sum(torch.tensor([float(local_rows)], dtype=torch.float64)))
    if rows == 0:
        raise DistributedError("a global batch with no rows")
    weight = local_rows / rows
    term_values = [terms.total.detach(), terms.booster, terms.light, terms.hint]
    # an empty local batch gives NaN means; it carries no weight, so contributes nothing
    local_terms = torch.stack([t.detach().double().reshape(()) for t in term_values])
    local_terms = local_terms * weight if local_rows else torch.zeros(4, dtype=torch.float64)
    flags = torch.tensor(
        [0.0 if p.grad is None or local_rows == 0 else 1.0 for p in dense + sparse],
        dtype=torch.float64,
    )
    grads = [
        (p.grad * weight if p.grad is not None and local_rows else torch.zeros_like(p)).reshape(-1)
        for p in dense
    ]
    flat = torch.cat([flags, local_terms.to(torch.float64)] + [g.double() for g in grads])
    flat = ctx._all_reduce_sum(flat)
    n_dense = len(dense)
    any_grad = flat[: n_dense + len(sparse)] > 0
    total, booster, light, hint = flat[n_dense + len(sparse) : n_dense + len(sparse) + 4]
    offset = n_dense + len(sparse) + 4
    for i, p in enumerate(dense):
        size = p.numel()
        if any_grad[i]:
            p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
        else:
            p.grad = None
        offset += size

    _sync_sparse(ctx, sparse, [bool(f) for f in any_grad[n_dense:]], weight, local_rows)

    synced = dataclasses.replace(
        terms,
        total=total.to(terms.total.dtype),
        booster=booster.to(terms.booster.dtype),
        light=light.to(terms.light.dtype),
        hint=hint.to(terms.hint.dtype),
    )
    return synced, rows


def _sync_sparse(
    ctx: DistContext,
    params: Sequence[torch.nn.Parameter],
    needed: Sequence[bool],
    weight: float,
    local_rows: int,
) -> None:
    """All-gather the touched rows of every sparse-gradient table.

    Per rank and table: the coalesced (row index, weighted row gradient)
    pairs. Three collectives for all tables together: the per-table counts,
    then one padded int64 buffer of indices and one padded float buffer of
    row values. The result's rows are the union of the ranks' touched rows,
    duplicates summed — the rows SparseAdam would update in one process.
    """
    active = [p for p, need in zip(params, needed, strict=True) if need]
    for p, need in zip(params, needed, strict=True):
        if not need:
            p.grad = None
    if not active:
        return
    local_idx, local_val = [], []
    for p in active:
        g = p.grad
        if g is None or local_rows == 0:
            local_idx.append(torch.zeros(0, dtype=torch.int64))
            local_val.append(torch.zeros(0, *p.shape[1:], dtype=p.dtype))
            continue
        if not g.is_sparse:
            raise DistributedError(
                f"expected a sparse gradient for an embedding table of shape {tuple(p.shape)}"
            )
        g = g.coalesce()
        local_idx.append(g.indices()[0])
        local_val.append(g.values() * weight)
    counts = torch.tensor([len(i) for i in local_idx], dtype=torch.int64)
    all_counts = torch.stack(ctx._all_gather(counts))  # [world, tables]
    row_width = [int(np.prod(p.shape[1:])) for p in active]
    idx_len = int(all_counts.sum(dim=1).max())
    val_len = int((all_counts * torch.tensor(row_width)).sum(dim=1).max())
    idx_buf = torch.zeros(max(idx_len, 1), dtype=torch.int64)
    val_buf = torch.zeros(max(val_len, 1), dtype=active[0].dtype)
    if local_idx:
        cat_idx = torch.cat(local_idx)
        cat_val = torch.cat([v.reshape(-1) for v in local_val])
        idx_buf[: len(cat_idx)] = cat_idx
        val_buf[: len(cat_val)] = cat_val
    idx_parts, val_parts = ctx._all_gather(idx_buf), ctx._all_gather(val_buf)
    per_table_idx: list[list[Tensor]] = [[] for _ in active]
    per_table_val: list[list[Tensor]] = [[] for _ in active]
    for r in range(ctx.world_size):
        i_off = v_off = 0
        for t, p in enumerate(active):
            c = int(all_counts[r, t])
            per_table_idx[t].append(idx_parts[r][i_off : i_off + c])
            per_table_val[t].append(
                val_parts[r][v_off : v_off + c * row_width[t]].view(c, *p.shape[1:])
            )
            i_off += c
            v_off += c * row_width[t]
    for t, p in enumerate(active):
        indices = torch.cat(per_table_idx[t]).unsqueeze(0)
        values = torch.cat(per_table_val[t])
        # indices are rows of this table by construction; skip the O(nnz) re-check
        p.grad = torch.sparse_coo_tensor(
            indices, values, p.shape, check_invariants=False
        ).coalesce()


__all__ = ["sync_gradients"]
