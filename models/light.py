"""Light nets (students) — what gets exported and served — and their scorers.

Two kinds:

* :class:`MLPLight` (fine ranking): a small MLP over the served features.
* :class:`TwoTower` (coarse ranking): a user/context tower and an item tower,
  both ℓ2-normalised, ``logit = scale·⟨u, v⟩ (+ bias)``; item vectors can be
  precomputed because the item tower never sees user or context inputs.

The nets take concatenated embeddings; the scorers (:class:`MLPScorer`,
:class:`TwoTowerScorer`) wrap a net with the :class:`~models.embedding.FeatureView`
(s) it reads and implement the exported TorchScript interface of
``docs/INTERNALS.md``: ``forward(features: dict[str, Tensor]) -> Tensor[B]`` and,
for two-tower, ``user_vector`` / ``item_vector``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.embedding import FeatureView
from models.mlp import MLP, MLPHead

# A learned scale is capped so the logits cannot run away (cosine · 100 is plenty).
MAX_SCALE = 100.0


class MLPLight(MLPHead):
    """Small MLP light net.

    Args:
        in_dim: width D of the served-feature embeddings.
        dims: hidden widths; ``H = dims[-1]``.
        norm, dropout: see :class:`models.mlp.MLP`.

    Shapes: ``forward(x [B, D]) -> (logit [B], hidden [B, H])``.
    """


class TwoTower(nn.Module):
    """Two-tower light net: ``logit = scale·⟨normalize(u), normalize(v)⟩ + bias``.

    Args:
        user_dim: width of the user + context embeddings.
        item_dim: width of the item embeddings.
        dims: tower widths (both towers); the tower output ``d = dims[-1]`` is
            linear (no ReLU) and then ℓ2-normalised.
        scale: initial (or fixed) scale of the cosine.
        learn_scale: learn the scale (log-parameterised, capped at ``MAX_SCALE``).
        bias: learn a scalar bias added to the logit.
        norm, dropout: see :class:`models.mlp.MLP` (hidden layers only).

    Shapes: ``forward(xu [B, Du], xi [B, Di]) -> (logit [B], hidden [B, 2d])``
    where ``hidden = [u ‖ v]`` (normalised tower outputs).
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        dims: Sequence[int],
        scale: float = 10.0,
        learn_scale: bool = True,
        bias: bool = False,
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < scale <= MAX_SCALE:
            raise ValueError(f"two-tower scale must be in (0, {MAX_SCALE}], got {scale}")
        self.user_tower = MLP(user_dim, dims, norm=norm, dropout=dropout, activate_last=False)
        self.item_tower = MLP(item_dim, dims, norm=norm, dropout=dropout, activate_last=False)
        self.out_dim = self.user_tower.out_dim
        self.hidden_dim = 2 * self.out_dim
        log_scale = torch.tensor([math.log(scale)])
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.max_log_scale = math.log(MAX_SCALE)
        self.use_bias = bias
        if bias:
            self.bias = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("bias", torch.zeros(1))

    def scale(self) -> Tensor:
        """The cosine scale, ``[1]``."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def user_embedding(self, xu: Tensor) -> Tensor:
        """``[B, Du] -> [B, d]``, ℓ2-normalised."""
        return F.normalize(self.user_tower(xu), dim=-1)

    def item_embedding(self, xi: Tensor) -> Tensor:
        """``[N, Di] -> [N, d]``, ℓ2-normalised (scale not applied)."""
        return F.normalize(self.item_tower(xi), dim=-1)

    def forward(self, xu: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        u = self.user_embedding(xu)
        v = self.item_embedding(xi)
        logit = self.scale() * (u * v).sum(dim=-1) + self.bias
        return logit, torch.cat([u, v], dim=1)


class MLPScorer(nn.Module):
    """Exported fine-ranking scorer: served-feature view + :class:`MLPLight`.

    ``forward(features) -> logits [B]``.
    """

    def __init__(self, view: FeatureView, net: MLPLight) -> None:
        super().__init__()
        self.view = view
        self.net = net

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        logit, _ = self.net(self.view(features))
        return logit


class TwoTowerScorer(nn.Module):
    """Exported coarse-ranking scorer: user and item views + :class:`TwoTower`.

    * ``forward(features) -> logits [B]`` (row b pairs user row b with item row b)
    * ``user_vector(features) -> [B, d]``: user + context features only, ℓ2-normalised
    * ``item_vector(features) -> [N, d]``: item features only, ℓ2-normalised times
      the scale, so ``logits = item_vectors @ user_vector``.

    With ``bias=True`` both vectors get one extra component (``user: 1``,
    ``item: bias``) so the dot product still equals the logit exactly.
    """

    def __init__(self, user_view: FeatureView, item_view: FeatureView, net: TwoTower) -> None:
        super().__init__()
        self.user_view = user_view
        self.item_view = item_view
        self.net = net
        self.use_bias = net.use_bias

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        logit, _ = self.net(self.user_view(features), self.item_view(features))
        return logit

    @torch.jit.export
    def user_vector(self, features: dict[str, Tensor]) -> Tensor:
        u = self.net.user_embedding(self.user_view(features))
        if self.use_bias:
            u = torch.cat([u, torch.ones_like(u[:, :1])], dim=1)
        return u

    @torch.jit.export
    def item_vector(self, features: dict[str, Tensor]) -> Tensor:
        v = self.net.item_embedding(self.item_view(features)) * self.net.scale()
        if self.use_bias:
            v = torch.cat([v, self.net.bias.expand(v.shape[0]).unsqueeze(1)], dim=1)
        return v


__all__ = ["MAX_SCALE", "MLPLight", "MLPScorer", "TwoTower", "TwoTowerScorer"]
