"""The serving stage's base: one verified artifact bound to the item table it scores against.

A stage is immutable once built, so a request that holds a reference keeps a
consistent model even while a reload swaps in a new one. Both kinds
(:mod:`service.ranking.stages`) have the same three steps: :meth:`Stage.bind_items`
(at load), :meth:`Stage.encode_side` and :meth:`Stage.score` (per request); the base
holds what they share: the side encoding, the item encoding, the candidates' rows, the
warm-up check and the description.

Candidate ids map to rows through an int64 hash index. Unknown ids and
candidates with inline features are encoded per request (unknown → the
encoder's OOV / default values) and reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from models.contract.artifact import Artifact
from models.contract.feature_spec import FeatureType
from models.contract.manifest import sha256_bytes  # re-exported from models.provenance
from service.feature_store.base import IdIndex, ItemTable
from service.ranking.values import (
    DEFAULT_CACHE_BYTES,
    FeatureValueError,
    NonFiniteEncodingError,
    SideCache,
    check_value,
)

# Item-table rows encoded at a time at load (bounds peak memory).
ENCODE_CHUNK = 8192


class WarmupError(RuntimeError):
    """A model produced no finite scores of the right shape during warm-up."""


class Stage:
    """A loaded artifact bound to an item table, ready to score candidates.

    Subclasses implement :meth:`bind_items` and :meth:`score`; build one with
    :func:`~service.ranking.stages.stage_class` of the artifact's kind.

    Args:
        role: ``coarse`` or ``fine`` (the stage it serves).
        artifact: the verified artifact.
        items: raw item features from the feature store.
        items_complete: False when the store could not provide item features, so every
            item gets defaults (answers are then ``degraded``).
        user_id_column: a served user feature of this name is the request's user id.
        item_id_column: a served item feature of this name is the candidate's id.
    """

    item_ids: np.ndarray
    item_index: IdIndex

    def __init__(
        self,
        role: str,
        artifact: Artifact,
        items: ItemTable,
        user_id_column: str = "user_id",
        item_id_column: str = "item_id",
        items_complete: bool = True,
        side_cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        manifest = artifact.manifest
        self.role = role
        self.step = f"{role}_inference"
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
        self._numeric_items = [
            n
            for n in self.item_names
            if n in artifact.encoder.specs and artifact.encoder.specs[n].type is FeatureType.NUMERIC
        ]
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
        self.side_key = sha256_bytes(side_state.encode())
        self.loaded_at = time.time()
        self._side_cache = SideCache(self.encoder, side_cache_bytes)
        with torch.inference_mode():
            self.bind_items()

    # ----------------------------------------------------------------- the three steps
    def bind_items(self) -> None:
        """Precompute what scoring needs from the item table (runs once, at load)."""
        raise NotImplementedError

    def encode_side(
        self,
        user_id: int,
        stored: Mapping[str, Any],
        context: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Encode the user and context features of one request: tensors with batch size 1.

        Each feature is encoded on its own (one row, so the same as encoding the row as a
        whole) through the per-model cache. A bad value from the request (``overrides``,
        ``context``) is the client's error; a bad value from the feature store
        (``stored``) is replaced by the default and reported, never blamed on the client.

        Returns:
            ``(inputs, names of stored values replaced by defaults)``.

        Raises:
            FeatureValueError: a request value that cannot be encoded, naming it.
        """
        out: dict[str, torch.Tensor] = {}
        bad: list[str] = []
        specs = self.encoder.specs
        overrides = overrides or {}
        for name in self.user_names:
            if name == self.user_id_column:
                out[name] = self._side_cache.encode(name, user_id)
            elif name in overrides:
                out[name] = self._encode_request(name, overrides[name], ("user_features", name))
            else:
                value = stored.get(name)
                try:
                    check_value(specs[name], value, ("user_features", name))
                    out[name] = self._side_cache.encode(name, value)
                except (FeatureValueError, NonFiniteEncodingError):
                    bad.append(name)
                    out[name] = self._side_cache.encode(name, None)
        for name in self.context_names:
            out[name] = self._encode_request(name, context.get(name), ("context", name))
        return out, bad

    def _encode_request(self, name: str, value: Any, loc: tuple[str | int, ...]) -> torch.Tensor:
        check_value(self.encoder.specs[name], value, loc)
        try:
            return self._side_cache.encode(name, value)
        except NonFiniteEncodingError as exc:
            raise FeatureValueError(loc, str(exc)) from None

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
        raise NotImplementedError

    # ----------------------------------------------------------------- item encoding
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
        for start in range(0, max(len(rows), 1), ENCODE_CHUNK):
            sel = rows[start : start + ENCODE_CHUNK]
            raw = {n: col[sel] for n, col in self.items.columns.items()}
            parts.append(self._encode_items(self.items.ids[sel], raw))
        return {n: torch.cat([p[n] for p in parts]) for n in self.item_names}

    # ----------------------------------------------------------------- per request
    def lookup(self, candidate_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the candidates in this model's item index and whether each is known."""
        rows, found = self.item_index.positions(candidate_ids)
        if not found.all():
            rows[~found] = len(self.item_ids)  # the trailing default row
        return rows, found

    def _gather(
        self, candidate_ids: np.ndarray, inline: Mapping[int, Mapping[str, Any]]
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, dict[str, torch.Tensor] | None]:
        """What :meth:`score` needs of the candidates.

        Returns:
            ``(rows int64 [K] as a tensor, known bool [K], special int64 [S], the special
            candidates' encoded item inputs or None)``; special candidates (unknown, or
            with inline features) are encoded per request.
        """
        rows, found = self.lookup(candidate_ids)
        special, special_inputs = self._special_rows(candidate_ids, found, inline)
        return torch.from_numpy(rows), found, special, special_inputs

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
                        check_value(
                            self.encoder.specs[name], value, ("candidates", idx, "features", name)
                        )
                row.update(extra)
            raw_rows.append(row)
        columns = {n: [r.get(n) for r in raw_rows] for n in self.item_names}
        encoded = self._encode_items(ids, columns)
        for name in self._numeric_items:
            finite = torch.isfinite(encoded[name])
            if not bool(finite.all()):
                # a value inside float32 that overflows once standardised (tiny std)
                j = int(torch.nonzero(~finite)[0, 0])
                idx = int(special[j])
                raise FeatureValueError(
                    ("candidates", idx, "features", name),
                    f"feature {name!r}: {columns[name][j]!r} is not finite once encoded",
                )
        return special, encoded

    # ----------------------------------------------------------------- load checks
    def warm_up(self, rounds: int) -> None:
        """Score samples of known and unknown ids; refuse a model that yields bad output.

        Raises:
            WarmupError: non-finite scores or a wrong output shape.
        """
        known = self.item_ids[: min(len(self.item_ids), 64)]
        unknown = np.array([int(self.item_ids.max()) + 1 if len(self.item_ids) else 1])
        side, _ = self.encode_side(0, {}, {})
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
