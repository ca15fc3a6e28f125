"""Serving-cost helpers: parameter counts and FLOPs per candidate.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a real
forward pass (matrix multiplications; embedding lookups and element-wise ops
count as 0), divided by the number of candidates in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(params: nn.Module | Iterable[Tensor]) -> int:
    """Number of scalar parameters of a module (or an iterable of tensors), shared ones once."""
    tensors = params.parameters() if isinstance(params, nn.Module) else params
    seen: dict[int, int] = {}
    for p in tensors:
        seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def batch_size(features: Mapping[str, Tensor]) -> int:
    """Rows B of an encoded feature dict (every value is ``[B]`` or ``[B, L]``)."""
    sizes = {int(v.shape[0]) for v in features.values()}
    if len(sizes) != 1:
        raise ValueError(f"feature tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of one call ``fn(*args)`` (no gradient)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args)
    return int(counter.get_total_flops())


def flops_per_candidate(
    module: nn.Module | Callable[[dict[str, Tensor]], Any], features: Mapping[str, Tensor]
) -> float:
    """FLOPs of ``module(features)`` divided by the number of candidates B.

    Args:
        module: any callable taking the encoded feature dict (a scorer, a
            ``JointModel``, or a bound method such as ``model.booster_logit``).
        features: an encoded batch ``{name: [B] or [B, L]}``; use B ≥ 2 so
            BatchNorm-style layers behave, and put modules in eval mode first.
    """
    return count_flops(module, dict(features)) / batch_size(features)


__all__ = ["batch_size", "count_flops", "count_parameters", "flops_per_candidate"]
