"""The feature contract: one definition of feature encoding for training and serving.

Everything that turns a raw value (an int64 id, a string, a float, a list of
tags) into a model input lives here — in :class:`FeatureEncoder` and the modules
it is built from: ``feature_spec`` (declarations, index conventions),
``categorical`` (hash buckets, vocabularies, bags) and ``numeric`` (transforms,
imputation, buckets) — and nowhere else. The trainer fits a
:class:`FeatureEncoder` on the training split and saves it; the exported
artifact carries the saved state; the service loads it with this same code.
That is how train/serve skew is ruled out by construction.

Encoded layout (what every model's ``forward`` receives), for a batch of B rows:

* categorical (single-valued) and bucketised numeric → ``int64 [B]``
* multi-valued categorical → ``int64 [B, max_len]``, right-padded with 0
* numeric (log1p / standardise / none) → ``float32 [B]``

Index conventions for every categorical table: ``0`` = padding / missing,
``1`` = out-of-vocabulary, ``2..`` = known values (vocab) or hash buckets.

Only ``numpy`` and the standard library are used, so the service can import it
without pulling in training code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.contract.categorical import Vocabulary, bag_matrix, fit_vocab, hash_bucket
from models.contract.feature_spec import (
    FIRST_INDEX,
    OOV_INDEX,
    PAD_INDEX,
    ContractError,
    Encoding,
    FeatureSpec,
    FeatureType,
)
from models.contract.numeric import encode_numeric, fit_numeric

# --------------------------------------------------------------------------- per-feature encoders


@dataclass
class EncodeReport:
    """What an encode call had to repair, per feature (counts, not silence)."""

    imputed: dict[str, int] = field(default_factory=dict)
    oov: dict[str, int] = field(default_factory=dict)
    rows: int = 0

    def add(self, other: EncodeReport) -> None:
        self.rows += other.rows
        for src, dst in ((other.imputed, self.imputed), (other.oov, self.oov)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v


class FeatureEncoder:
    """Fitted encoders for a set of features; the single source of encoding truth.

    Usage:
        enc = FeatureEncoder(specs).fit(train_columns)
        batch = enc.transform(columns)           # dict name -> np.ndarray
        enc.save(path) / FeatureEncoder.load(path)
    """

    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ContractError(f"duplicate feature name(s): {dup}")
        self.specs: dict[str, FeatureSpec] = {s.name: s for s in specs}
        self.vocabs: dict[str, Vocabulary] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.fitted = False

    # ----------------------------------------------------------------- fitting
    def fit(self, columns: Mapping[str, Any]) -> FeatureEncoder:
        """Fit vocabularies and numeric statistics on the training split only."""
        for name, spec in self.specs.items():
            if name not in columns:
                raise ContractError(f"feature {name!r}: column missing from the training data")
            col = columns[name]
            if spec.type is FeatureType.NUMERIC:
                self.stats[name] = fit_numeric(np.asarray(col, dtype=np.float64), spec)
            elif spec.encoding is Encoding.VOCAB:
                if spec.is_bag:
                    flat, _ = bag_matrix(col, spec)
                    raw = flat
                else:
                    raw = np.asarray(col)
                    if raw.dtype == object:
                        raw = raw[np.array([v is not None for v in raw], dtype=bool)]
                self.vocabs[name] = fit_vocab(raw, spec)
        self.fitted = True
        return self

    # ----------------------------------------------------------------- encoding
    def transform(
        self,
        columns: Mapping[str, Any],
        names: Iterable[str] | None = None,
        report: EncodeReport | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode raw columns. Returns ``{name: array}`` in the encoded layout.

        Args:
            columns: raw column values (arrays, lists, pandas Series).
            names: encode only these features (default: all).
            report: accumulates imputed-value and OOV counts per feature.
        """
        if not self.fitted:
            raise ContractError("encoder is not fitted")
        out: dict[str, np.ndarray] = {}
        for name in self.specs if names is None else names:
            if name not in self.specs:
                raise ContractError(f"feature {name!r}: not in this encoder")
            if name not in columns:
                raise ContractError(f"feature {name!r}: column missing")
            out[name] = self.encode_column(name, columns[name], report)
        if report is not None and out:
            report.rows += len(next(iter(out.values())))
        return out

    def encode_column(self, name: str, col: Any, report: EncodeReport | None = None) -> np.ndarray:
        spec = self.specs[name]
        if spec.type is FeatureType.NUMERIC:
            values, bad = encode_numeric(col, spec, self.stats[name])
            if report is not None and bad:
                report.imputed[name] = report.imputed.get(name, 0) + bad
            return values
        if spec.is_bag:
            flat, pos = bag_matrix(col, spec)
            idx = self._encode_ids(spec, flat) if len(flat) else np.zeros(0, dtype=np.int64)
            out = np.zeros(pos.shape, dtype=np.int64)
            out[pos >= 0] = idx
            if report is not None:
                report.oov[name] = report.oov.get(name, 0) + int((idx == OOV_INDEX).sum())
            return out
        raw = np.asarray(col)
        missing = None
        if raw.dtype == object:
            missing = np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in raw])
            if missing.any():
                raw = np.where(missing, 0, raw)
        elif raw.dtype.kind == "f":
            missing = ~np.isfinite(raw)
        idx = self._encode_ids(spec, raw)
        if missing is not None and missing.any():
            idx = np.where(missing, PAD_INDEX, idx)
        if report is not None:
            report.oov[name] = report.oov.get(name, 0) + int((idx == OOV_INDEX).sum())
        return idx.astype(np.int64)

    def _encode_ids(self, spec: FeatureSpec, raw: np.ndarray) -> np.ndarray:
        if spec.encoding is Encoding.HASH:
            return hash_bucket(raw, spec.buckets)
        return self.vocabs[spec.name].lookup(raw)

    # ----------------------------------------------------------------- sizes
    def cardinality(self, name: str) -> int:
        """Number of embedding rows a feature needs (padding and OOV included)."""
        spec = self.specs[name]
        if not spec.is_sparse:
            return 0
        if spec.type is FeatureType.NUMERIC:
            return FIRST_INDEX + spec.num_buckets
        if spec.encoding is Encoding.HASH:
            return FIRST_INDEX + spec.buckets
        return FIRST_INDEX + len(self.vocabs[name])

    def defaults(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Encoded values for one row when a feature is unavailable (shape ``[1]``
        or ``[1, max_len]``): padding for ids, the imputation value for numerics."""
        out: dict[str, np.ndarray] = {}
        for name in names:
            spec = self.specs[name]
            if spec.is_bag:
                out[name] = np.zeros((1, spec.max_len), dtype=np.int64)
            elif spec.is_sparse:
                out[name] = np.zeros(1, dtype=np.int64)
            else:
                out[name], _ = encode_numeric(np.array([np.nan]), spec, self.stats[name])
        return out

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "features": [s.to_dict() for s in self.specs.values()],
            "vocabs": {k: v.to_state() for k, v in self.vocabs.items()},
            "stats": self.stats,
        }

    def spec_hash(self) -> str:
        """sha256 of the feature specs (names, types, sides, encodings, dims).

        Two encoders with the same hash expect identical model inputs; the
        service refuses an artifact whose manifest hash differs from this."""
        blob = json.dumps([s.to_dict() for s in self.specs.values()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.state(), fh)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeatureEncoder:
        if state.get("format") != 1:
            raise ContractError(f"unsupported encoder format {state.get('format')!r}")
        enc = cls([FeatureSpec.from_dict(f) for f in state["features"]])
        enc.vocabs = {k: Vocabulary.from_state(v) for k, v in state["vocabs"].items()}
        enc.stats = {k: dict(v) for k, v in state["stats"].items()}
        missing = [
            n
            for n, s in enc.specs.items()
            if (s.type is FeatureType.NUMERIC and n not in enc.stats)
            or (
                s.type is not FeatureType.NUMERIC
                and s.encoding is Encoding.VOCAB
                and n not in enc.vocabs
            )
        ]
        if missing:
            raise ContractError(f"encoder state lacks fitted statistics for {missing}")
        enc.fitted = True
        return enc

    @classmethod
    def load(cls, path: str) -> FeatureEncoder:
        with open(path) as fh:
            return cls.from_state(json.load(fh))

    def subset(self, names: Iterable[str]) -> FeatureEncoder:
        """An encoder over a subset of features (e.g. what the light net uses)."""
        names = list(names)
        enc = FeatureEncoder([self.specs[n] for n in names])
        enc.vocabs = {n: self.vocabs[n] for n in names if n in self.vocabs}
        enc.stats = {n: self.stats[n] for n in names if n in self.stats}
        enc.fitted = self.fitted
        return enc


__all__ = ["EncodeReport", "FeatureEncoder"]
