"""Ranking a request: preprocess → inference (under ``torch.inference_mode()``) →
postprocess, each step timed.

A request runs through a cascade: a list of :class:`~service.ranking.stage_base.Stage`
objects, each scoring the previous one's survivors and keeping its best ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from service.feature_store.base import FeatureStore, UserLookup
from service.metrics import ServiceMetrics
from service.ranking.stage_base import Stage
from service.ranking.timing import timed

# The `stage` of a rank request -> the model roles it runs, in cascade order.
REQUEST_STAGES: dict[str, tuple[str, ...]] = {
    "coarse": ("coarse",),
    "fine": ("fine",),
    "cascade": ("coarse", "fine"),
}


@dataclass(frozen=True)
class RankQuery:
    """A validated rank request.

    Attributes:
        user_id: int64 user id.
        candidate_ids: int64 ``[K]`` candidate item ids.
        stage: ``coarse``, ``fine`` or ``cascade`` (a key of :data:`REQUEST_STAGES`).
        top_k: items returned.
        coarse_top_k: coarse survivors passed to the fine stage (cascade).
        user_features: raw user features overriding the store.
        context: raw context features.
        inline: candidate index -> raw item features overriding the store.
    """

    user_id: int
    candidate_ids: np.ndarray
    stage: str
    top_k: int
    coarse_top_k: int
    user_features: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    inline: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        """The model roles this request runs, in cascade order."""
        return REQUEST_STAGES[self.stage]

    def keeps(self) -> list[int]:
        """How many candidates each stage of :attr:`roles` keeps."""
        return [self.coarse_top_k] * (len(self.roles) - 1) + [self.top_k]


@dataclass
class RankResult:
    """Best-first items and what the answer is based on."""

    item_ids: np.ndarray
    scores: np.ndarray
    coarse_scores: np.ndarray | None
    unknown_item_ids: list[int]
    unknown_user: bool
    degraded: bool
    model_versions: dict[str, str]
    timing_ms: dict[str, float]


def _encode_sides(
    query: RankQuery, stored: Mapping[str, Any], stages: Sequence[Stage]
) -> tuple[list[dict[str, torch.Tensor]], bool]:
    """User + context inputs per stage (stages with identical side encoders share one),
    and whether a stored user value had to be replaced by its default."""
    by_key: dict[str, dict[str, torch.Tensor]] = {}
    sides: list[dict[str, torch.Tensor]] = []
    bad_stored = False
    for stage in stages:
        side = by_key.get(stage.side_key)
        if side is None:
            side, bad = stage.encode_side(query.user_id, stored, query.context, query.user_features)
            by_key[stage.side_key] = side
            bad_stored = bad_stored or bool(bad)
        sides.append(side)
    return sides, bad_stored


def _reindex(
    inline: Mapping[int, Mapping[str, Any]], survivors: np.ndarray
) -> dict[int, Mapping[str, Any]]:
    """Inline features keyed by position among the survivors instead of the request."""
    if not inline:
        return {}
    return {j: inline[s] for j, s in enumerate(survivors.tolist()) if s in inline}


def _top(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest logits, best first (partial selection, not a full sort)."""
    k = min(k, logits.shape[0])
    return torch.topk(logits, k, sorted=True).indices


@dataclass
class _Cascade:
    """What the stages run so far leave: survivors (indices into the request), their
    scores, and the previous stage's probabilities of the survivors."""

    order: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    previous_probs: torch.Tensor | None = None


def _run_stage(
    cascade: _Cascade,
    stage: Stage,
    side: Mapping[str, torch.Tensor],
    query: RankQuery,
    keep: int,
    unknown: np.ndarray,
) -> None:
    """Score the survivors with ``stage`` and keep its best ``keep``; marks unknown ids."""
    ids = query.candidate_ids
    if cascade.order is None:
        logits, known = stage.score(side, ids, query.inline)
        unknown |= ~known
        best = _top(logits, keep)
        cascade.order = best
    else:
        survivors = cascade.order.numpy()
        logits, known = stage.score(side, ids[survivors], _reindex(query.inline, survivors))
        unknown[survivors[~known]] = True
        best = _top(logits, keep)
        assert cascade.scores is not None
        cascade.previous_probs = torch.sigmoid(cascade.scores[best])
        cascade.order = cascade.order[best]
    cascade.scores = logits[best]


class Ranker:
    """Runs a :class:`RankQuery` through the cascade of stages it names.

    Args:
        store: the feature store.
        metrics: service metrics (store, unknown-id, degraded and step metrics).
    """

    def __init__(self, store: FeatureStore, metrics: ServiceMetrics) -> None:
        self.store = store
        self.metrics = metrics
        # Children resolved once: a labels() lookup per request costs more than the update.
        self._store_errors = metrics.store_errors.labels(store.kind)  # exists at 0 from start
        self._store_duration = metrics.store_duration.labels(store.kind)
        self._unknown_items = metrics.unknown_ids.labels("item")
        self._unknown_users = metrics.unknown_ids.labels("user")
        self._bad_store_values = metrics.store_bad_values.labels(store.kind)
        self._store_up_gauge = metrics.store_up.labels(store.kind)
        self._store_up: bool | None = None
        self._set_store_up(True)

    def _set_store_up(self, up: bool) -> None:
        if up is not self._store_up:  # a gauge write only when it changes
            self._store_up = up
            self._store_up_gauge.set(1 if up else 0)

    def _fetch_user(self, query: RankQuery, stages: Sequence[Stage]) -> UserLookup:
        overrides = query.user_features or {}
        needed = {n for s in stages for n in s.user_names if n != s.user_id_column}
        if needed <= set(overrides):
            return UserLookup(found=True)  # fully overridden: no store call
        lookup = self.store.get_user(query.user_id)
        self._store_duration.observe(lookup.seconds)
        if lookup.degraded:
            self._store_errors.inc()
        return lookup

    def rank(self, query: RankQuery, models: Mapping[str, Stage]) -> RankResult:
        """Score and select; ``models`` must hold the stages ``query.stage`` needs."""
        steps: dict[str, float] = {}
        stages = [models[r] for r in query.roles]
        with timed(steps, "feature_fetch"):
            lookup = self._fetch_user(query, stages)
            degraded = lookup.degraded or not all(s.items_complete for s in stages)
            unknown_user = not lookup.found and not lookup.degraded

        ids = query.candidate_ids
        unknown = np.zeros(len(ids), dtype=bool)
        cascade = _Cascade()
        with torch.inference_mode():
            with timed(steps, "preprocess"):
                sides, bad_stored = _encode_sides(query, lookup.features, stages)
            for stage, side, keep in zip(stages, sides, query.keeps()):
                with timed(steps, stage.step):
                    _run_stage(cascade, stage, side, query, keep, unknown)
            with timed(steps, "postprocess"):
                assert cascade.order is not None and cascade.scores is not None
                probs = torch.sigmoid(cascade.scores).numpy()
                top_ids = ids[cascade.order.numpy()]
                unknown_ids = list(dict.fromkeys(ids[unknown].tolist()))

        if unknown_ids:
            self._unknown_items.inc(len(unknown_ids))
        if unknown_user:
            self._unknown_users.inc()
        if bad_stored:
            # the store holds a value the model cannot encode: its data, not the client's
            self._bad_store_values.inc()
            degraded = True
        if degraded:
            self.metrics.degraded.inc()
        self._set_store_up(not lookup.degraded)
        previous = cascade.previous_probs
        return RankResult(
            item_ids=top_ids,
            scores=probs,
            coarse_scores=None if previous is None else previous.numpy(),
            unknown_item_ids=unknown_ids,
            unknown_user=unknown_user,
            degraded=degraded,
            model_versions={s.role: s.version for s in stages},
            timing_ms=steps,
        )
