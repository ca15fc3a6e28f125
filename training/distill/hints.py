"""Hint losses: how far the light net (student) is from the booster (teacher).

Notation: ``z_b`` booster (teacher) logit, ``z_l`` light (student) logit, ``T`` the
temperature. Hints, each ``≥ 0`` and minimised when the student matches the teacher
(chosen by :class:`~training.distill.rules.Hint`, applied by
:func:`training.distill.losses.hint_loss`):

* ``logit_mse``: ``mean((z_l − z_b)²)``.
* ``soft_bce``: ``BCE(σ(z_b), z_l)`` (soft labels; PFD's ``L_d``).
* ``kl``: binary ``KL(σ(z_b/T) ‖ σ(z_l/T))·T²`` (Hinton), batch mean.
* ``hidden``: ``mean((P h_l − h_b)²)`` with ``P`` the learned projection
  (``JointModel.hint_projection``, light side) — FitNets.
* ``listwise``: per request, ``KL(softmax(z_b/T) ‖ softmax(z_l/T))·T²`` over the
  request's items, averaged over requests with ≥ 2 items (vectorised).
* ``off``: no hint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def logit_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean((z_l − z_b)²)`` over ``[B]`` logits."""
    return F.mse_loss(student, teacher)


def soft_bce(student: Tensor, teacher: Tensor) -> Tensor:
    """BCE of student logits ``[B]`` against the teacher's probabilities ``σ(z_b)``."""
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))


def binary_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(σ(z_b/T) ‖ σ(z_l/T))·T²``, mean over the batch (``[B]`` logits → scalar).

    Each logit is the two-class distribution ``softmax([z, 0]/T)``.
    """
    zeros = torch.zeros_like(student)
    log_q = F.log_softmax(torch.stack([student, zeros], dim=-1) / temperature, dim=-1)
    log_p = F.log_softmax(torch.stack([teacher, zeros], dim=-1) / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return kl.mean() * temperature**2


def hidden_mse(student_projected: Tensor, teacher_hidden: Tensor) -> Tensor:
    """FitNets hint ``mean((P h_l − h_b)²)``; ``[B, H]`` each. Pulls features together."""
    if student_projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden hint: projected light hidden {tuple(student_projected.shape)} does not "
            f"match booster hidden {tuple(teacher_hidden.shape)}"
        )
    return F.mse_loss(student_projected, teacher_hidden)


def _segment_log_softmax(x: Tensor, seg: Tensor, n: int) -> Tensor:
    """Log-softmax of ``x [B]`` within segments ``seg [B]`` (values 0..n-1)."""
    seg_max = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    seg_max = seg_max.scatter_reduce(0, seg, x, reduce="amax", include_self=True)
    # The max is a constant shift for numerical stability; it carries no gradient.
    shifted = x - seg_max.detach()[seg]
    sums = torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, seg, shifted.exp())
    return shifted - sums.log()[seg]


def listwise_kl(
    student: Tensor, teacher: Tensor, group: Tensor, temperature: float = 1.0
) -> Tensor:
    """Per-request ``KL(softmax(z_b/T) ‖ softmax(z_l/T))·T²``, mean over requests.

    Args:
        student, teacher: logits ``[B]``.
        group: request id per row ``int64 [B]`` (any values; rows need not be sorted).
        temperature: T.

    Requests with a single row have zero KL by definition and are left out of the
    mean; a batch without any multi-row request gives 0.
    """
    if group.shape != student.shape:
        raise ValueError(
            f"listwise hint: group {tuple(group.shape)} vs logits {tuple(student.shape)}"
        )
    _, seg = torch.unique(group, return_inverse=True)
    n = int(seg.max().item()) + 1 if seg.numel() else 0
    log_q = _segment_log_softmax(student / temperature, seg, n)
    log_p = _segment_log_softmax(teacher / temperature, seg, n)
    per_row = log_p.exp() * (log_p - log_q)
    per_group = torch.zeros(n, dtype=student.dtype, device=student.device).index_add(
        0, seg, per_row
    )
    sizes = torch.bincount(seg, minlength=n)
    multi = sizes > 1
    if not bool(multi.any()):
        return student.sum() * 0.0
    return per_group[multi].mean() * temperature**2


__all__ = ["binary_kl", "hidden_mse", "listwise_kl", "logit_mse", "soft_bce"]
