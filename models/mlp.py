"""The MLP block every dense part of the zoo is built from."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

NORMS = ("none", "batch", "layer")


class MLP(nn.Module):
    """Stacked ``Linear → [norm] → ReLU → [dropout]`` layers.

    Args:
        in_dim: input width D.
        dims: output width of each layer; the block returns ``[B, dims[-1]]``.
        norm: "none", "batch" (BatchNorm1d) or "layer" (LayerNorm), after each Linear.
        dropout: dropout probability after each activation (0 = off).
        activate_last: apply norm/ReLU/dropout after the last Linear too. Set False
            when the block's output is an embedding (two-tower) rather than a hidden layer.

    Shapes: ``forward(x [B, D]) -> [B, dims[-1]]``.
    """

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int],
        norm: str = "none",
        dropout: float = 0.0,
        activate_last: bool = True,
    ) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"MLP input width must be > 0, got {in_dim}")
        if not dims or any(int(d) <= 0 for d in dims):
            raise ValueError(f"MLP layer widths must be a non-empty list of positive ints: {dims}")
        if norm not in NORMS:
            raise ValueError(f"MLP norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_dim
        for i, d in enumerate(dims):
            layers.append(nn.Linear(width, int(d)))
            if i < len(dims) - 1 or activate_last:
                if norm == "batch":
                    layers.append(nn.BatchNorm1d(int(d)))
                elif norm == "layer":
                    layers.append(nn.LayerNorm(int(d)))
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            width = int(d)
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


__all__ = ["MLP", "NORMS"]


class MLPHead(nn.Module):
    """DenseArch (MLP) + OverArch (Linear → logit): the MLP booster and the MLP light net.

    Args:
        in_dim: input width D.
        dims: hidden widths; ``H = dims[-1]``.
        norm, dropout: see :class:`MLP`.

    Shapes: ``forward(x [B, D]) -> (logit [B], hidden [B, H])``.
    """

    def __init__(
        self, in_dim: int, dims: Sequence[int], norm: str = "none", dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dense_arch = MLP(in_dim, dims, norm=norm, dropout=dropout)
        self.over_arch = nn.Linear(self.dense_arch.out_dim, 1)
        self.hidden_dim = self.dense_arch.out_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.dense_arch(x)
        return self.over_arch(hidden).squeeze(-1), hidden
