"""Categorical values → embedding indices: hash buckets, vocabularies and bags.

Stable 64-bit hashing (the same bucket on every machine and process), the fitted
:class:`Vocabulary` (``OOV_INDEX`` for unseen keys) and :func:`fit_vocab`, and
:func:`bag_matrix`, which lays a column of multi-valued cells out as a
``[B, max_len]`` position matrix. Part of the feature contract
(:mod:`models.contract.features`); numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.contract.feature_spec import FIRST_INDEX, OOV_INDEX, FeatureSpec

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


# --------------------------------------------------------------------------- bags


def bag_matrix(values: Any, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
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
    """Vectorised :func:`bag_matrix` for an object array whose cells are 1-d numpy
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


# --------------------------------------------------------------------------- fitting


def fit_vocab(raw: np.ndarray, spec: FeatureSpec) -> Vocabulary:
    """The vocabulary of a feature's train values ``raw`` (``min_count``, ``max_vocab`` applied)."""
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
