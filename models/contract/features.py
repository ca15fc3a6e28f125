"""The feature contract: one definition of feature encoding for training and serving.

Everything that turns a raw value (an int64 id, a string, a float, a list of
tags) into a model input lives here and nowhere else. The trainer fits a
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
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np

PAD_INDEX = 0
OOV_INDEX = 1
FIRST_INDEX = 2


class FeatureType(StrEnum):
    CATEGORICAL = "categorical"
    MULTI_CATEGORICAL = "multi_categorical"
    NUMERIC = "numeric"


class Side(StrEnum):
    """Where a feature comes from at serving time."""

    USER = "user"
    ITEM = "item"
    CONTEXT = "context"
    CROSS = "cross"  # user×item interacted features: not available to a two-tower model


class Encoding(StrEnum):
    VOCAB = "vocab"
    HASH = "hash"


class Transform(StrEnum):
    NONE = "none"
    LOG1P = "log1p"
    STANDARDIZE = "standardize"
    LOG1P_STANDARDIZE = "log1p_standardize"
    BUCKETIZE = "bucketize"


class ContractError(ValueError):
    """A feature spec or encoder state is invalid; the message names the feature."""


def _check_keys(kind: str, name: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ContractError(
            f"{kind} {name!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature as declared in the schema.

    Attributes:
        name: column name in the log (and key in the encoded batch).
        type: categorical, multi_categorical or numeric.
        side: user, item, context or cross.
        encoding: vocab (fitted on train, OOV index for unseen) or hash buckets
            (categorical only).
        buckets: number of hash buckets (``encoding == hash``).
        min_count: values seen fewer times on train map to OOV (vocab only).
        max_vocab: keep only the most frequent values (vocab only; 0 = no limit).
        transform: numeric transform; ``bucketize`` turns the value into a
            categorical index over ``num_buckets`` train quantiles.
        num_buckets: quantile buckets for ``bucketize``.
        max_len: fixed length of a multi-valued bag (longer bags are truncated).
        separator: splits a string cell into a bag (CSV logs).
        dim: embedding dimension (categorical and bucketised features).
        default: value used when a numeric value is missing or not finite;
            ``None`` means the train mean.
    """

    name: str
    type: FeatureType
    side: Side
    encoding: Encoding = Encoding.VOCAB
    buckets: int = 0
    min_count: int = 1
    max_vocab: int = 0
    transform: Transform = Transform.NONE
    num_buckets: int = 16
    max_len: int = 8
    separator: str = "|"
    dim: int = 8
    default: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", FeatureType(self.type))
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "encoding", Encoding(self.encoding))
        object.__setattr__(self, "transform", Transform(self.transform))
        if self.encoding is Encoding.HASH and self.buckets <= 0:
            raise ContractError(f"feature {self.name!r}: hash encoding needs buckets > 0")
        if self.type is FeatureType.NUMERIC and self.encoding is Encoding.HASH:
            raise ContractError(f"feature {self.name!r}: numeric features cannot be hashed")
        if self.type is not FeatureType.NUMERIC and self.transform is not Transform.NONE:
            raise ContractError(
                f"feature {self.name!r}: transform applies to numeric features only"
            )
        if self.dim <= 0 or self.max_len <= 0 or self.num_buckets <= 1:
            raise ContractError(f"feature {self.name!r}: dim, max_len must be > 0, num_buckets > 1")

    @property
    def is_sparse(self) -> bool:
        """True when the encoded value is an embedding index (needs a table)."""
        return self.type is not FeatureType.NUMERIC or self.transform is Transform.BUCKETIZE

    @property
    def is_bag(self) -> bool:
        return self.type is FeatureType.MULTI_CATEGORICAL

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        name = str(data.get("name", "?"))
        _check_keys("feature", name, data, [f.name for f in fields(cls)])
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"feature {name!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- hashing


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Deterministic 64-bit mix of uint64 values (same on every machine and process)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def _string_to_u64(values: np.ndarray) -> np.ndarray:
    """Stable 64-bit fingerprints of strings (blake2b), one per unique value."""
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    prints = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
            for s in uniq
        ),
        dtype=np.uint64,
        count=len(uniq),
    )
    return prints[inverse]


def hash_bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    """Map raw values to ``FIRST_INDEX + (mix(value) mod buckets)`` as int64."""
    values = np.asarray(values)
    if values.dtype.kind in "iu" or values.dtype.kind == "f":
        u = values.astype(np.int64).view(np.uint64)
    else:
        u = _string_to_u64(values)
    return (_splitmix64(u) % np.uint64(buckets)).astype(np.int64) + FIRST_INDEX


# --------------------------------------------------------------------------- vocabularies


class Vocabulary:
    """Sorted keys → indices ``FIRST_INDEX..``; unseen keys → ``OOV_INDEX``.

    Integer keys are looked up with ``np.searchsorted`` (no Python loop, ~0.1 ms
    for 10,000 ids); string keys through a dict over the unique values.
    """

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys)
        self.is_int = keys.dtype.kind in "iu"
        if self.is_int:
            self.keys = np.unique(keys.astype(np.int64))
            self._index: dict[str, int] | None = None
        else:
            self.keys = np.unique(keys.astype(str))
            self._index = {k: i + FIRST_INDEX for i, k in enumerate(self.keys.tolist())}

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Indices of ``values`` (any shape) as int64; OOV for unknown keys."""
        values = np.asarray(values)
        if self.is_int:
            if values.dtype.kind not in "iu":
                if values.dtype.kind == "f":
                    ok = np.isfinite(values)
                    ints = np.where(ok, values, 0).astype(np.int64)
                    out = self._lookup_int(ints)
                    return np.where(ok & (ints == values), out, OOV_INDEX)
                # strings that spell integers (CSV) are accepted; others are OOV
                converted = np.array([_as_int_or_none(v) for v in values.ravel()], dtype=object)
                ok = np.array([v is not None for v in converted])
                ints = np.where(ok, converted, 0).astype(np.int64).reshape(values.shape)
                return np.where(ok.reshape(values.shape), self._lookup_int(ints), OOV_INDEX)
            return self._lookup_int(values.astype(np.int64))
        assert self._index is not None
        uniq, inverse = np.unique(values.astype(str).ravel(), return_inverse=True)
        mapped = np.fromiter(
            (self._index.get(u, OOV_INDEX) for u in uniq.tolist()), np.int64, len(uniq)
        )
        return mapped[inverse].reshape(values.shape)

    def _lookup_int(self, ints: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.full(ints.shape, OOV_INDEX, dtype=np.int64)
        pos = np.searchsorted(self.keys, ints)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        found = self.keys[pos_c] == ints
        return np.where(found, pos_c + FIRST_INDEX, OOV_INDEX).astype(np.int64)

    def to_state(self) -> dict[str, Any]:
        return {"is_int": self.is_int, "keys": self.keys.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Vocabulary:
        dtype = np.int64 if state["is_int"] else str
        keys = np.asarray(state["keys"], dtype=dtype)
        if not state["is_int"] and len(keys) == 0:
            keys = np.asarray([], dtype=str)
        vocab = cls(keys)
        vocab.is_int = bool(state["is_int"])
        return vocab


def _as_int_or_none(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or f != int(f) or abs(f) >= 2**63:
        return None
    return int(f)


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


def _bag_matrix(values: Any, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Turn a column of bags (lists/arrays, or separator-joined strings) into
    a flat value array and a ``[B, max_len]`` position matrix (-1 = padding)."""
    fast = _bag_matrix_of_arrays(values, spec)
    if fast is not None:
        return fast
    rows = list(values)
    n = len(rows)
    lengths = np.zeros(n, dtype=np.int64)
    flat: list[Any] = []
    for i, bag in enumerate(rows):
        if bag is None or (isinstance(bag, float) and math.isnan(bag)):
            items: Sequence[Any] = ()
        elif isinstance(bag, str):
            items = [t for t in bag.split(spec.separator) if t != ""]
        else:
            items = list(bag)
        items = items[: spec.max_len]
        lengths[i] = len(items)
        flat.extend(items)
    pos = np.full((n, spec.max_len), -1, dtype=np.int64)
    cols = np.arange(spec.max_len)
    mask = cols[None, :] < lengths[:, None]
    pos[mask] = np.arange(len(flat))
    flat_arr = np.asarray(flat) if flat else np.asarray([], dtype=np.int64)
    return flat_arr, pos


def _bag_matrix_of_arrays(values: Any, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised :func:`_bag_matrix` for an object array whose cells are 1-d numpy
    arrays or ``None`` (what the training data readers produce; the Python loop
    costs ~15 s per million rows). Returns ``None`` for any other input."""
    if not isinstance(values, np.ndarray) or values.dtype != object or values.ndim != 1:
        return None
    present = np.fromiter((v is not None for v in values), bool, len(values))
    cells = values[present]
    if set(map(type, cells)) - {np.ndarray} or any(c.ndim != 1 for c in cells[:1]):
        return None
    lengths = np.zeros(len(values), dtype=np.int64)
    lengths[present] = np.fromiter(map(len, cells), np.int64, len(cells))
    if not lengths.any():
        return np.asarray([], dtype=np.int64), np.full((len(values), spec.max_len), -1, np.int64)
    flat = np.concatenate(cells)
    kept = np.minimum(lengths, spec.max_len)
    within = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = flat[within < np.repeat(kept, lengths)]
    if flat.dtype == object:
        flat = np.asarray(flat.tolist())
    pos = np.full((len(values), spec.max_len), -1, dtype=np.int64)
    pos[np.arange(spec.max_len)[None, :] < kept[:, None]] = np.arange(len(flat))
    return flat, pos


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
                self.stats[name] = _fit_numeric(np.asarray(col, dtype=np.float64), spec)
            elif spec.encoding is Encoding.VOCAB:
                if spec.is_bag:
                    flat, _ = _bag_matrix(col, spec)
                    raw = flat
                else:
                    raw = np.asarray(col)
                    if raw.dtype == object:
                        raw = raw[np.array([v is not None for v in raw], dtype=bool)]
                self.vocabs[name] = _fit_vocab(raw, spec)
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
            values, bad = _encode_numeric(col, spec, self.stats[name])
            if report is not None and bad:
                report.imputed[name] = report.imputed.get(name, 0) + bad
            return values
        if spec.is_bag:
            flat, pos = _bag_matrix(col, spec)
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
                out[name], _ = _encode_numeric(np.array([np.nan]), spec, self.stats[name])
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


def _fit_vocab(raw: np.ndarray, spec: FeatureSpec) -> Vocabulary:
    if raw.dtype.kind == "f":
        raw = raw[np.isfinite(raw)].astype(np.int64)
    if raw.dtype.kind not in "iu":
        raw = raw.astype(str)
    if len(raw) == 0:
        return Vocabulary(raw)
    keys, counts = np.unique(raw, return_counts=True)
    keep = counts >= spec.min_count
    keys, counts = keys[keep], counts[keep]
    if spec.max_vocab and len(keys) > spec.max_vocab:
        # most frequent first; ties broken by key so the result is deterministic
        order = np.lexsort((keys, -counts))[: spec.max_vocab]
        keys = keys[order]
    return Vocabulary(keys)


def _fit_numeric(x: np.ndarray, spec: FeatureSpec) -> dict[str, Any]:
    finite = x[np.isfinite(x)]
    if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
        finite = np.log1p(np.clip(finite, 0.0, None))
    mean = float(finite.mean()) if len(finite) else 0.0
    std = float(finite.std()) if len(finite) else 1.0
    return numeric_stats(spec, mean, std, finite)


def numeric_stats(
    spec: FeatureSpec, mean: float, std: float, quantile_values: np.ndarray
) -> dict[str, Any]:
    """The encoder's stats of one numeric feature from its fitted moments.

    Args:
        spec: the feature.
        mean, std: of the (transformed) finite values.
        quantile_values: float ``[M]`` the bucket boundaries are taken from
            (all finite values, or a sample of them when fitted in chunks).
    """
    stats: dict[str, Any] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
    if spec.transform is Transform.BUCKETIZE:
        qs = np.linspace(0, 1, spec.num_buckets + 1)[1:-1]
        bounds = (
            np.unique(np.quantile(quantile_values, qs)) if len(quantile_values) else np.zeros(0)
        )
        stats["boundaries"] = bounds.tolist()
    if spec.default is not None:
        raw_default = float(spec.default)
        if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
            raw_default = float(np.log1p(max(raw_default, 0.0)))
        stats["impute"] = raw_default
    else:
        stats["impute"] = mean
    return stats


def _encode_numeric(
    col: Any, spec: FeatureSpec, stats: Mapping[str, Any]
) -> tuple[np.ndarray, int]:
    """Returns (encoded values, number of imputed NaN/inf/non-numeric values)."""
    raw = np.asarray(col)
    if raw.dtype == object or raw.dtype.kind in "US":
        x = np.array([_as_float(v) for v in raw.ravel()], dtype=np.float64).reshape(raw.shape)
    else:
        x = raw.astype(np.float64)
    bad = ~np.isfinite(x)
    if spec.transform in (Transform.LOG1P, Transform.LOG1P_STANDARDIZE):
        with np.errstate(invalid="ignore"):
            x = np.log1p(np.clip(x, 0.0, None))
    n_bad = int(bad.sum())
    if n_bad:
        x = np.where(bad, stats["impute"], x)
    if spec.transform in (Transform.STANDARDIZE, Transform.LOG1P_STANDARDIZE):
        x = (x - stats["mean"]) / stats["std"]
    if spec.transform is Transform.BUCKETIZE:
        idx = np.searchsorted(np.asarray(stats["boundaries"]), x, side="right") + FIRST_INDEX
        return idx.astype(np.int64), n_bad
    return x.astype(np.float32), n_bad


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
