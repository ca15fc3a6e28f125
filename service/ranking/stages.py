"""Ranking: preprocess → inference (under ``torch.inference_mode()``) → postprocess.

A :class:`StageModel` is one verified artifact bound to the item table it was
encoded against; it is immutable once built, so a request that holds a
reference keeps a consistent model even while a reload swaps in a new one.

* two-tower (coarse): item vectors come precomputed with the artifact (plus
  vectors computed once at load for store items the artifact did not know); a
  request costs one ``user_vector`` pass, ``torch.index_select`` of the
  candidate rows and one ``torch.mv`` (advanced indexing ``V[pos]`` is ~15×
  slower on CPU).
* MLP (fine): item features are encoded once at load with the artifact's
  ``FeatureEncoder`` (the training code's encoder: no train/serve skew) and
  gathered per request; user and context features are encoded per request (one
  row) and broadcast over the candidates.

Candidate ids map to rows by binary search over sorted int64 ids. Unknown ids
and candidates with inline features are encoded per request (unknown → the
encoder's OOV / default values) and reported.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.contract.artifact import Artifact
from models.contract.features import FeatureSpec, FeatureType
from service.feature_store.base import FeatureStore, IdIndex, ItemTable, UserLookup
from service.metrics import ServiceMetrics

STAGES = ("coarse", "fine", "cascade")
_ENCODE_CHUNK = 8192
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Distinct values cached per user/context feature; beyond it values are encoded per request.
_SIDE_CACHE_LIMIT = 50_000
# Coarse: score the whole item table when it is at most this many times the candidates.
_FULL_MV_RATIO = 4
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _cache_key(value: Any) -> Any:
    """A key that tells apart values the encoder may treat differently, or None.

    The type is part of the key because ``1``, ``1.0`` and ``True`` are equal as dict
    keys but need not encode alike; NaN is never equal to itself, so it is not cached.
    """
    kind = type(value)
    key: Any = None
    if kind in _SCALARS or isinstance(value, np.generic):
        key = (kind, value) if value == value else None
    elif (kind is list or kind is tuple) and all(
        (type(v) in _SCALARS or isinstance(v, np.generic)) and v == v for v in value
    ):
        key = (kind, tuple((type(v), v) for v in value))
    if key is not None:
        try:
            hash(key)
        except TypeError:  # an exotic numpy scalar
            return None
    return key


class FeatureValueError(ValueError):
    """A request-supplied feature value has the wrong shape for its feature.

    Attributes:
        loc: where the value was (e.g. ``("user_features", "age")``).
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class WarmupError(RuntimeError):
    """A model produced no finite scores of the right shape during warm-up."""


def check_value(spec: FeatureSpec, value: Any, loc: tuple[str | int, ...]) -> None:
    """Refuse values whose shape cannot be encoded for ``spec`` (lists for scalars, objects)."""
    if isinstance(value, dict):
        raise FeatureValueError(loc, f"feature {spec.name!r} does not take an object")
    is_list = isinstance(value, list | tuple)
    if spec.type is FeatureType.MULTI_CATEGORICAL:
        if is_list and any(isinstance(v, list | tuple | dict) for v in value):
            raise FeatureValueError(loc, f"feature {spec.name!r} takes a flat list of values")
    elif is_list:
        raise FeatureValueError(loc, f"feature {spec.name!r} takes a single value, not a list")
    elif spec.type is FeatureType.NUMERIC and value is not None:
        # A string or bool would be silently imputed, a number beyond float32 becomes inf
        # after encoding and turns every score into NaN: both are the client's error.
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise FeatureValueError(
                loc, f"feature {spec.name!r} is numeric; got {type(value).__name__}"
            )
        if abs(value) > _FLOAT32_MAX:
            raise FeatureValueError(
                loc, f"feature {spec.name!r}: {value!r} is outside the float32 range"
            )


@dataclass(frozen=True)
class Timer:
    """Accumulates named step durations in milliseconds."""

    steps: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def mark(self) -> float:
        return time.perf_counter()

    def add(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + (now - since) * 1e3
        return now


class StageModel:
    """A loaded artifact bound to an item table, ready to score candidates.

    Args:
        role: ``coarse`` or ``fine`` (the stage it serves).
        artifact: the verified artifact.
        items: raw item features from the feature store.
        items_complete: False when the store could not provide item features, so every
            item gets defaults (answers are then ``degraded``).
        user_id_column: a served user feature of this name is the request's user id.
        item_id_column: a served item feature of this name is the candidate's id.
    """

    def __init__(
        self,
        role: str,
        artifact: Artifact,
        items: ItemTable,
        user_id_column: str = "user_id",
        item_id_column: str = "item_id",
        items_complete: bool = True,
    ) -> None:
        manifest = artifact.manifest
        self.role = role
        self.artifact = artifact
        self.name = manifest.name
        self.version = manifest.version
        self.kind = manifest.kind
        self.module = artifact.module
        self.encoder = artifact.encoder
        self.items = items
        self.items_complete = items_complete
        self.user_id_column = user_id_column
        self.item_id_column = item_id_column
        self.user_names = list(manifest.features.get("user", []))
        self.context_names = list(manifest.features.get("context", []))
        self.item_names = list(manifest.features.get("item", []))
        self.side_names = self.user_names + self.context_names
        if items_complete and len(items):
            # A model built for another feature set would otherwise score every item with
            # defaults for these columns, silently and without `degraded`.
            absent = [n for n in self.item_names if n != item_id_column and n not in items.columns]
            if absent:
                raise ValueError(
                    f"model {self.name}@{self.version} needs item feature(s) {absent} that the "
                    f"feature store's item table ({items.version}) does not have"
                )
        side_state = json.dumps(self.encoder.subset(self.side_names).state(), sort_keys=True)
        # Equal keys = identical user/context encoding (specs and fitted vocabularies/stats).
        self.side_key = hashlib.sha256(side_state.encode()).hexdigest()
        self.loaded_at = time.time()
        # feature name -> cache key of a raw value -> its encoding (see _encode_one)
        self._side_cache: dict[str, dict[Any, torch.Tensor]] = {}
        with torch.inference_mode():
            if self.kind == "two_tower":
                self._build_vectors()
            else:
                self._build_item_inputs()

    # ----------------------------------------------------------------- load-time encoding
    def _item_columns(self, ids: np.ndarray, raw: Mapping[str, Any]) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for name in self.item_names:
            if name == self.item_id_column:
                columns[name] = ids
            elif name in raw:
                columns[name] = raw[name]
            else:
                columns[name] = np.full(len(ids), None, dtype=object)
        return columns

    def _encode_items(self, ids: np.ndarray, raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        arrays = self.encoder.transform(self._item_columns(ids, raw), names=self.item_names)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def _encode_table(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Encode rows of the store's item table, in chunks to bound peak memory."""
        parts: list[dict[str, torch.Tensor]] = []
        for start in range(0, max(len(rows), 1), _ENCODE_CHUNK):
            sel = rows[start : start + _ENCODE_CHUNK]
            raw = {n: col[sel] for n, col in self.items.columns.items()}
            parts.append(self._encode_items(self.items.ids[sel], raw))
        return {n: torch.cat([p[n] for p in parts]) for n in self.item_names}

    def _build_item_inputs(self) -> None:
        rows = np.arange(len(self.items), dtype=np.int64)
        encoded = self._encode_table(rows)
        default = self._encode_items(np.zeros(1, dtype=np.int64), {})
        # One trailing default row keeps index_select in range for unknown ids.
        self.item_ids = self.items.ids
        self.item_index = self.items.index
        self.item_inputs = {n: torch.cat([encoded[n], default[n]]) for n in self.item_names}

    def _build_vectors(self) -> None:
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
            for start in range(0, len(extra_rows), _ENCODE_CHUNK):
                feats = self._encode_table(extra_rows[start : start + _ENCODE_CHUNK])
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

    # ----------------------------------------------------------------- per request
    def encode_side(
        self, user_id: int, user_raw: Mapping[str, Any], context: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Encode the user and context features of one request: tensors with batch size 1.

        Each feature is encoded on its own (one row, so the same as encoding the row as a
        whole) and hashable values are cached per feature: the encoder's per-call numpy
        work costs far more than the lookup, and users and contexts repeat.
        """
        out: dict[str, torch.Tensor] = {}
        specs = self.encoder.specs
        for name in self.user_names:
            value = user_id if name == self.user_id_column else user_raw.get(name)
            check_value(specs[name], value, ("user_features", name))
            out[name] = self._encode_one(name, value)
        for name in self.context_names:
            value = context.get(name)
            check_value(specs[name], value, ("context", name))
            out[name] = self._encode_one(name, value)
        return out

    def _encode_one(self, name: str, value: Any) -> torch.Tensor:
        """One feature of one row, encoded (batch size 1); cached for hashable values.

        The cached tensors are shared between requests and must not be written to (the
        scoring code only reads and ``expand``s them).
        """
        key = _cache_key(value)
        cache = self._side_cache.setdefault(name, {})
        if key is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
        encoded = torch.from_numpy(np.ascontiguousarray(self.encoder.encode_column(name, [value])))
        if key is not None and len(cache) < _SIDE_CACHE_LIMIT:
            cache[key] = encoded
        return encoded

    def lookup(self, candidate_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the candidates in this model's item index and whether each is known."""
        rows, found = self.item_index.positions(candidate_ids)
        if not found.all():
            rows[~found] = len(self.item_ids)  # the trailing default row
        return rows, found

    def _special_rows(
        self,
        candidate_ids: np.ndarray,
        found: np.ndarray,
        inline: Mapping[int, Mapping[str, Any]],
    ) -> tuple[np.ndarray, dict[str, torch.Tensor] | None]:
        """Candidates that need per-request encoding (unknown, or inline features)."""
        special = np.flatnonzero(~found)
        if inline:
            special = np.union1d(special, np.fromiter(inline, dtype=np.int64, count=len(inline)))
        if len(special) == 0:
            return special, None
        ids = candidate_ids[special]
        store_rows, in_store = self.items.positions(ids)
        raw_rows: list[dict[str, Any]] = []
        for j, idx in enumerate(special.tolist()):
            row = self.items.raw_row(int(store_rows[j])) if in_store[j] else {}
            extra = inline.get(idx)
            if extra:
                for name, value in extra.items():
                    if name in self.encoder.specs:
                        check_value(self.encoder.specs[name], value, ("candidates", idx, name))
                row.update(extra)
            raw_rows.append(row)
        columns = {n: [r.get(n) for r in raw_rows] for n in self.item_names}
        return special, self._encode_items(ids, columns)

    def score(
        self,
        side: Mapping[str, torch.Tensor],
        candidate_ids: np.ndarray,
        inline: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Light-net logits of every candidate.

        Args:
            side: output of :meth:`encode_side` (batch size 1).
            candidate_ids: int64 ``[K]``.
            inline: candidate index -> raw item features overriding the store.

        Returns:
            ``(logits float32 [K], known bool [K])``.
        """
        inline = inline or {}
        rows, found = self.lookup(candidate_ids)
        pos = torch.from_numpy(rows)
        special, special_inputs = self._special_rows(candidate_ids, found, inline)
        if self.kind == "two_tower":
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
        k = len(candidate_ids)
        feats = {n: torch.index_select(self.item_inputs[n], 0, pos) for n in self.item_names}
        if special_inputs is not None:
            where = torch.from_numpy(special)
            for n in self.item_names:
                feats[n][where] = special_inputs[n]
        for n, t in side.items():
            feats[n] = t.expand(k, *t.shape[1:])
        return self.module(feats).reshape(k).float(), found

    def warm_up(self, rounds: int) -> None:
        """Score samples of known and unknown ids; refuse a model that yields bad output.

        Raises:
            WarmupError: non-finite scores or a wrong output shape.
        """
        known = self.item_ids[: min(len(self.item_ids), 64)]
        unknown = np.array([int(self.item_ids.max()) + 1 if len(self.item_ids) else 1])
        side = self.encode_side(0, {}, {})
        with torch.inference_mode():
            for _ in range(rounds):
                for ids in (np.concatenate([known, unknown]), known[:8], unknown):
                    if len(ids) == 0:
                        continue
                    logits, _ = self.score(side, ids.astype(np.int64))
                    if logits.shape != (len(ids),):
                        raise WarmupError(
                            f"model {self.name}@{self.version}: expected {len(ids)} scores, "
                            f"got shape {list(logits.shape)}"
                        )
                    if not bool(torch.isfinite(logits).all()):
                        raise WarmupError(
                            f"model {self.name}@{self.version}: non-finite scores in warm-up"
                        )

    def describe(self) -> dict[str, Any]:
        m = self.artifact.manifest
        return {
            "stage": self.role,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "task": m.task,
            "created_at": m.created_at,
            "quantization": m.quantization,
            "spec_hash": m.spec_hash,
            "features": m.features,
            "items": len(self.item_ids),
            "items_version": self.items.version,
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True)
class RankQuery:
    """A validated rank request.

    Attributes:
        user_id: int64 user id.
        candidate_ids: int64 ``[K]`` candidate item ids.
        stage: ``coarse``, ``fine`` or ``cascade``.
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
    query: RankQuery, user_raw: Mapping[str, Any], models: Mapping[str, StageModel]
) -> dict[str, dict[str, torch.Tensor]]:
    """User + context inputs per stage; stages with identical side encoders share one."""
    sides: dict[str, dict[str, torch.Tensor]] = {}
    for role, model in models.items():
        twin = next((r for r in sides if models[r].side_key == model.side_key), None)
        sides[role] = (
            sides[twin]
            if twin is not None
            else model.encode_side(query.user_id, user_raw, query.context)
        )
    return sides


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


class Ranker:
    """Runs a :class:`RankQuery` through the configured stages.

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

    def _fetch_user(self, query: RankQuery, models: Sequence[StageModel]) -> UserLookup:
        overrides = query.user_features or {}
        needed = {n for m in models for n in m.user_names if n != m.user_id_column}
        if needed <= set(overrides):
            return UserLookup(found=True)  # fully overridden: no store call
        lookup = self.store.get_user(query.user_id)
        self._store_duration.observe(lookup.seconds)
        if lookup.degraded:
            self._store_errors.inc()
        return lookup

    def rank(self, query: RankQuery, models: Mapping[str, StageModel]) -> RankResult:
        """Score and select; ``models`` must hold the stages ``query.stage`` needs."""
        timer = Timer()
        roles = ["coarse", "fine"] if query.stage == "cascade" else [query.stage]
        used = [models[r] for r in roles]

        t = timer.mark()
        lookup = self._fetch_user(query, used)
        user_raw = {**lookup.features, **(query.user_features or {})}
        degraded = lookup.degraded or not all(m.items_complete for m in used)
        unknown_user = not lookup.found and not lookup.degraded
        t = timer.add("feature_fetch", t)

        ids = query.candidate_ids
        coarse_scores: torch.Tensor | None = None
        unknown = np.zeros(len(ids), dtype=bool)
        with torch.inference_mode():
            sides = _encode_sides(query, user_raw, {r: models[r] for r in roles})
            t = timer.add("preprocess", t)
            if query.stage == "fine":
                logits, known = models["fine"].score(sides["fine"], ids, query.inline)
                unknown |= ~known
                order = _top(logits, query.top_k)
                scores = logits[order]
                t = timer.add("fine_inference", t)
            else:
                logits, known = models["coarse"].score(sides["coarse"], ids, query.inline)
                unknown |= ~known
                keep = query.top_k if query.stage == "coarse" else query.coarse_top_k
                order = _top(logits, keep)
                scores = logits[order]
                t = timer.add("coarse_inference", t)
                if query.stage == "cascade":
                    survivors = order.numpy()
                    fine_logits, fine_known = models["fine"].score(
                        sides["fine"], ids[survivors], _reindex(query.inline, survivors)
                    )
                    unknown[survivors[~fine_known]] = True
                    best = _top(fine_logits, query.top_k)
                    order = order[best]
                    coarse_scores = torch.sigmoid(scores[best])
                    scores = fine_logits[best]
                    t = timer.add("fine_inference", t)
            probs = torch.sigmoid(scores).numpy()
        top_ids = ids[order.numpy()]
        unknown_ids = list(dict.fromkeys(ids[unknown].tolist()))
        timer.add("postprocess", t)

        if unknown_ids:
            self._unknown_items.inc(len(unknown_ids))
        if unknown_user:
            self._unknown_users.inc()
        if degraded:
            self.metrics.degraded.inc()
        return RankResult(
            item_ids=top_ids,
            scores=probs,
            coarse_scores=None if coarse_scores is None else coarse_scores.numpy(),
            unknown_item_ids=unknown_ids,
            unknown_user=unknown_user,
            degraded=degraded,
            model_versions={r: models[r].version for r in roles},
            timing_ms=timer.steps,
        )
