"""Fit the feature encoder in one bounded-memory pass over the training split.

:class:`EncoderFitter` takes the training split chunk by chunk (canonical
columns, see :mod:`training.data.readers`) and keeps, per feature, only

* **vocabulary features**: the distinct values seen so far and their counts
  (merged per chunk with ``np.unique``). ``min_count`` and ``max_vocab`` are
  applied once at the end, exactly as the in-memory fit applies them, so the
  vocabulary is **identical** to ``FeatureEncoder.fit`` on the whole split.
  Memory grows with the number of distinct values, never with rows.
* **numeric features**: count, mean and the sum of squared deviations, merged
  per chunk with Chan et al.'s parallel form of Welford's update. Mean and std
  equal the in-memory ``mean()``/``std()`` up to float summation order:
  relative difference ≤ 1e-12 (measured ~1e-16; tested at 1e-12).
* **bucketised numeric features** (``transform: bucketize``) also need
  quantiles: a uniform random sample without replacement of at most
  ``sample_rows`` finite values (bottom-k by a random key drawn per row from a
  generator seeded by ``(seed, first row of the chunk)``). While the split has
  at most ``sample_rows`` finite values the sample is all of them and the
  boundaries are **identical** to the in-memory fit; beyond, each boundary is
  the quantile of the sample, whose rank error is about ``1/sqrt(sample_rows)``
  (0.1 % of the rows at the default 1M).
* **hashed features**: nothing (hashing needs no fit).

The result is a :class:`models.contract.features.FeatureEncoder` whose state
has the same keys as the in-memory fit's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.contract.categorical import Vocabulary
from models.contract.feature_spec import Encoding, FeatureSpec, FeatureType, Transform
from models.contract.features import FeatureEncoder
from models.contract.numeric import numeric_stats
from training.data.encoding import _nullable_ints
from training.data.schema import Schema

SAMPLE_ROWS = 1_000_000
"""Default quantile-sample size per bucketised feature (8 MB of float64)."""


@dataclass
class _Counts:
    """Distinct values and their counts (sorted keys)."""

    keys: np.ndarray | None = None
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            if self.keys is None:
                self.keys = values
            return
        keys, counts = np.unique(values, return_counts=True)
        if self.keys is None or len(self.keys) == 0:
            self.keys, self.counts = keys, counts.astype(np.int64)
            return
        if (self.keys.dtype.kind in "iu") != (keys.dtype.kind in "iu"):
            # ints in one chunk, strings in another: the in-memory fit sees strings
            self.keys = self.keys.astype(str)
            keys = keys.astype(str)
        merged = np.concatenate([self.keys, keys])
        uniq, inverse = np.unique(merged, return_inverse=True)
        total = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(total, inverse, np.concatenate([self.counts, counts.astype(np.int64)]))
        self.keys, self.counts = uniq, total

    def vocabulary(self, spec: FeatureSpec) -> Vocabulary:
        """The vocabulary ``FeatureEncoder.fit`` builds from the same values."""
        keys = self.keys if self.keys is not None else np.zeros(0, dtype=np.int64)
        counts = self.counts
        if len(keys) == 0:
            return Vocabulary(keys)
        keep = counts >= spec.min_count
        keys, counts = keys[keep], counts[keep]
        if spec.max_vocab and len(keys) > spec.max_vocab:
            # most frequent first; ties broken by key (as the in-memory fit)
            keys = keys[np.lexsort((keys, -counts))[: spec.max_vocab]]
        return Vocabulary(keys)


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations (Chan/Welford merge)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        n_b = len(x)
        mean_b = float(x.mean())
        m2_b = float(np.square(x - mean_b).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n


@dataclass
class _Sample:
    """Uniform sample without replacement of at most ``size`` values (bottom-k keys)."""

    size: int
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    seen: int = 0

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        self.seen += len(x)
        values = np.concatenate([self.values, x])
        keys = np.concatenate([self.keys, rng.random(len(x))])
        if len(values) > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keep.sort()
            values, keys = values[keep], keys[keep]
        self.values, self.keys = values, keys

    @property
    def exact(self) -> bool:
        return self.seen <= self.size


def vocabulary_values(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """The raw values of one chunk the vocabulary counts (as ``FeatureEncoder.fit``
    and ``fit_vocab`` see them): present values, bags truncated to ``max_len``,
    integral floats as int64, anything else as strings."""
    if spec.is_bag:
        raw = _bag_values(values, spec.max_len)
    else:
        split = _nullable_ints(values) if spec.type is FeatureType.CATEGORICAL else None
        if split is not None:
            raw = split[0][~split[1]]
        else:
            raw = np.asarray(values)
            if raw.dtype == object:
                raw = raw[np.array([v is not None for v in raw], dtype=bool)]
    if raw.dtype.kind == "f":
        raw = raw[np.isfinite(raw)].astype(np.int64)
    if raw.dtype.kind not in "iu":
        raw = raw.astype(str)
    return raw.astype(np.int64) if raw.dtype.kind in "iu" else raw


def _bag_values(values: np.ndarray, max_len: int) -> np.ndarray:
    """Flat values of a column of bags (1-d arrays, lists or ``None``), each truncated."""
    cells = [np.asarray(v)[:max_len] for v in values if v is not None and len(v)]
    if not cells:
        return np.zeros(0, dtype=np.int64)
    flat = np.concatenate(cells)
    return np.asarray(flat.tolist()) if flat.dtype == object else flat


class EncoderFitter:
    """Accumulates what the encoder needs from the training split, chunk by chunk.

    Args:
        schema: the log schema (every feature is fitted).
        sample_rows: quantile-sample size of bucketised features.
        seed: seed of the quantile sample.

    Usage::

        fitter = EncoderFitter(schema)
        for columns in chunks:            # canonical columns, side tables joined
            fitter.update(columns)
        encoder = fitter.finish()
    """

    def __init__(self, schema: Schema, sample_rows: int = SAMPLE_ROWS, seed: int = 0) -> None:
        if sample_rows <= 0:
            raise ValueError(f"sample_rows must be > 0, got {sample_rows}")
        self.specs = list(schema.features)
        self.seed = seed
        self.rows = 0
        self._counts = {
            s.name: _Counts()
            for s in self.specs
            if s.type is not FeatureType.NUMERIC and s.encoding is Encoding.VOCAB
        }
        self._moments = {s.name: _Moments() for s in self.specs if s.type is FeatureType.NUMERIC}
        self._samples = {
            s.name: _Sample(sample_rows) for s in self.specs if s.transform is Transform.BUCKETIZE
        }

    def update(self, columns: Mapping[str, np.ndarray]) -> None:
        """Add one chunk of training rows (every feature column present)."""
        n = len(next(iter(columns.values()))) if columns else 0
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rows])))
        for spec in self.specs:
            if spec.name not in columns:
                continue
            values = columns[spec.name]
            if spec.name in self._counts:
                self._counts[spec.name].add(vocabulary_values(spec, values))
            elif spec.name in self._moments:
                x = np.asarray(values, dtype=np.float64)
                x = x[np.isfinite(x)]
                if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
                    x = np.log1p(np.clip(x, 0.0, None))
                self._moments[spec.name].add(x)
                if spec.name in self._samples:
                    self._samples[spec.name].add(x, rng)
        self.rows += n

    def finish(self) -> FeatureEncoder:
        """The fitted encoder (same state layout as ``FeatureEncoder.fit``)."""
        encoder = FeatureEncoder(self.specs)
        for spec in self.specs:
            if spec.name in self._counts:
                encoder.vocabs[spec.name] = self._counts[spec.name].vocabulary(spec)
            elif spec.name in self._moments:
                encoder.stats[spec.name] = self._numeric_stats(spec)
        encoder.fitted = True
        return encoder

    def quantiles_exact(self) -> dict[str, bool]:
        """Per bucketised feature: true when its sample holds every finite value."""
        return {name: s.exact for name, s in self._samples.items()}

    def _numeric_stats(self, spec: FeatureSpec) -> dict[str, Any]:
        m = self._moments[spec.name]
        mean = m.mean if m.n else 0.0
        std = math.sqrt(m.m2 / m.n) if m.n else 1.0
        sample = self._samples[spec.name].values if spec.transform is Transform.BUCKETIZE else []
        return numeric_stats(spec, mean, std, np.asarray(sample, dtype=np.float64))


__all__ = ["SAMPLE_ROWS", "EncoderFitter", "vocabulary_values"]
