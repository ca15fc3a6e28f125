"""Serving stages: the two kinds of :class:`~service.ranking.stage_base.Stage`.

* :class:`TwoTowerStage` (coarse): item vectors come precomputed with the
  artifact (plus vectors computed once at load for store items the artifact did
  not know); a request costs one ``user_vector`` pass, ``torch.index_select`` of
  the candidate rows and one ``torch.mv`` (advanced indexing ``V[pos]`` is far
  slower on CPU; see docs/BENCHMARKS.md).
* :class:`MLPStage` (fine): item features are encoded once at load with the
  artifact's ``FeatureEncoder`` (the training code's encoder: no train/serve
  skew) and gathered per request; user and context features are encoded per
  request (one row) and broadcast over the candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from service.feature_store.base import IdIndex
from service.ranking.stage_base import ENCODE_CHUNK, Stage

# Two-tower: score the whole item table when it is at most this many times the candidates.
_FULL_MV_RATIO = 4


class TwoTowerStage(Stage):
    """Coarse stage: a user vector against precomputed item vectors."""

    item_vectors: torch.Tensor

    def bind_items(self) -> None:
        art_ids = self.artifact.item_ids
        art_vectors = self.artifact.item_vectors
        assert art_ids is not None and art_vectors is not None
        _, in_artifact = IdIndex(art_ids).positions(self.items.ids)
        extra_rows = np.flatnonzero(~in_artifact)
        ids, vectors = art_ids, torch.from_numpy(np.ascontiguousarray(art_vectors))
        if len(extra_rows):
            # Items the store knows but the export did not: their vectors are computed once
            # here from store features, with the same encoder.
            extra: list[torch.Tensor] = []
            for start in range(0, len(extra_rows), ENCODE_CHUNK):
                feats = self._encode_table(extra_rows[start : start + ENCODE_CHUNK])
                extra.append(self.module.item_vector(feats).float())
            ids = np.concatenate([art_ids, self.items.ids[extra_rows]])
            vectors = torch.cat([vectors, *extra])
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            vectors = vectors[torch.from_numpy(order)]
        self.item_ids = ids
        self.item_index = IdIndex(ids)
        # Trailing zero row: the target of unknown ids before their vectors are filled in.
        self.item_vectors = torch.cat([vectors, vectors.new_zeros(1, vectors.shape[1])])

    def score(
        self,
        side: Mapping[str, torch.Tensor],
        candidate_ids: np.ndarray,
        inline: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        pos, found, special, special_inputs = self._gather(candidate_ids, inline or {})
        user_vec = self.module.user_vector(dict(side))[0]
        if len(self.item_vectors) <= _FULL_MV_RATIO * len(candidate_ids):
            # Scoring every item reads the table once in order; gathering the candidate
            # rows first costs more than the extra dot products until the table is
            # several times larger than the request.
            scores = torch.mv(self.item_vectors, user_vec)
            logits = torch.index_select(scores, 0, pos)
        else:
            logits = torch.mv(torch.index_select(self.item_vectors, 0, pos), user_vec)
        if special_inputs is not None:
            vecs = self.module.item_vector(special_inputs)
            logits[torch.from_numpy(special)] = torch.mv(vecs.float(), user_vec)
        return logits, found


class MLPStage(Stage):
    """Fine stage: the MLP over gathered item inputs and broadcast user/context inputs."""

    item_inputs: dict[str, torch.Tensor]

    def bind_items(self) -> None:
        rows = np.arange(len(self.items), dtype=np.int64)
        encoded = self._encode_table(rows)
        default = self._encode_items(np.zeros(1, dtype=np.int64), {})
        # One trailing default row keeps index_select in range for unknown ids.
        self.item_ids = self.items.ids
        self.item_index = self.items.index
        self.item_inputs = {n: torch.cat([encoded[n], default[n]]) for n in self.item_names}

    def score(
        self,
        side: Mapping[str, torch.Tensor],
        candidate_ids: np.ndarray,
        inline: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        pos, found, special, special_inputs = self._gather(candidate_ids, inline or {})
        k = len(candidate_ids)
        feats = {n: torch.index_select(self.item_inputs[n], 0, pos) for n in self.item_names}
        if special_inputs is not None:
            where = torch.from_numpy(special)
            for n in self.item_names:
                feats[n][where] = special_inputs[n]
        for n, t in side.items():
            feats[n] = t.expand(k, *t.shape[1:])
        return self.module(feats).reshape(k).float(), found


_STAGE_CLASSES: dict[str, type[Stage]] = {"two_tower": TwoTowerStage, "mlp": MLPStage}


def stage_class(kind: str) -> type[Stage]:
    """The stage class serving artifacts of ``kind`` (``two_tower`` or ``mlp``).

    Raises:
        KeyError: an unknown kind (the artifact loader refuses those first).
    """
    return _STAGE_CLASSES[kind]
