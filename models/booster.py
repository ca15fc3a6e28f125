"""Boosters (teachers): heavy networks over served + privileged feature embeddings.

A booster runs only while training (``JointModel.forward_joint``); it is never
exported. Every booster maps the concatenated embeddings ``x [B, D]`` to
``(logit [B], hidden [B, H])`` where ``hidden`` is the last representation
before the output layer (the target of hidden-layer hints).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.mlp import MLP, MLPHead


class MLPBooster(MLPHead):
    """Deep MLP booster: DenseArch (MLP) + OverArch (Linear → logit).

    Args:
        in_dim: input width D.
        dims: hidden layer widths; ``H = dims[-1]``.
        norm, dropout: see :class:`models.mlp.MLP`.
    """


class CrossNet(nn.Module):
    """DCN-v2 cross network: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``.

    Args:
        dim: input width D (kept by every layer).
        num_layers: number of cross layers.
        rank: 0 for full-rank ``W_l`` (D×D); r > 0 for the low-rank mixture
            ``W_l = U_l V_lᵀ`` with ``U_l, V_l`` of shape D×r.

    Shapes: ``forward(x0 [B, D]) -> [B, D]``.
    """

    def __init__(self, dim: int, num_layers: int, rank: int = 0) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"cross network needs at least one layer, got {num_layers}")
        if rank < 0:
            raise ValueError(f"cross network rank must be >= 0, got {rank}")
        self.rank = rank
        if rank == 0:
            self.down = nn.ModuleList([nn.Linear(dim, dim) for _ in range(num_layers)])
            self.up = nn.ModuleList([nn.Identity() for _ in range(num_layers)])
        else:
            self.down = nn.ModuleList([nn.Linear(dim, rank, bias=False) for _ in range(num_layers)])
            self.up = nn.ModuleList([nn.Linear(rank, dim) for _ in range(num_layers)])

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for down, up in zip(self.down, self.up):
            x = x0 * up(down(x)) + x
        return x


class DCNBooster(nn.Module):
    """DCN-v2 booster: cross network + deep MLP, then a Linear → logit.

    Args:
        in_dim: input width D.
        dims: deep network widths.
        cross_layers: number of cross layers.
        cross_rank: 0 = full rank, r > 0 = low rank (see :class:`CrossNet`).
        structure: "stacked" (cross → deep; ``H = dims[-1]``) or "parallel"
            (cross ‖ deep concatenated; ``H = D + dims[-1]``).
        norm, dropout: see :class:`models.mlp.MLP`.
    """

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int],
        cross_layers: int = 3,
        cross_rank: int = 0,
        structure: str = "stacked",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"DCN structure must be 'stacked' or 'parallel', got {structure!r}")
        self.parallel = structure == "parallel"
        self.cross = CrossNet(in_dim, cross_layers, cross_rank)
        self.deep = MLP(in_dim, dims, norm=norm, dropout=dropout)
        self.hidden_dim = self.deep.out_dim + (in_dim if self.parallel else 0)
        self.over_arch = nn.Linear(self.hidden_dim, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        crossed = self.cross(x)
        # parallel: [cross ‖ deep] side by side; stacked: deep on top of the cross output
        hidden = torch.cat([crossed, self.deep(x)], dim=1) if self.parallel else self.deep(crossed)
        return self.over_arch(hidden).squeeze(-1), hidden


__all__ = ["CrossNet", "DCNBooster", "MLPBooster"]
