"""Request-supplied feature values: shape checks and the per-model encoding cache."""

from __future__ import annotations

import numbers
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from models.contract.feature_spec import FeatureSpec, FeatureType
from models.contract.features import FeatureEncoder

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Only small values are cached: a key is never an attacker-sized string or list.
_CACHED_STRING_CHARS = 64
_CACHED_LIST_LEN = 16
# Per entry beyond key and tensor data: the dict slot, the key tuples, the tensor object.
_ENTRY_OVERHEAD_BYTES = 400
DEFAULT_CACHE_BYTES = 4 * 1024 * 1024


class FeatureValueError(ValueError):
    """A request-supplied feature value has the wrong shape for its feature.

    Attributes:
        loc: where the value was (e.g. ``("user_features", "age")``).
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def check_value(spec: FeatureSpec, value: Any, loc: tuple[str | int, ...]) -> None:
    """Refuse values whose shape cannot be encoded for ``spec``.

    Objects, lists for single-valued features, scalars other than a separator-joined
    string for multi-valued ones, and non-numbers or numbers beyond float32 for numeric
    features.

    Raises:
        FeatureValueError: naming ``loc``.
    """
    if isinstance(value, dict):
        raise FeatureValueError(loc, f"feature {spec.name!r} does not take an object")
    is_list = isinstance(value, list | tuple)
    if spec.type is FeatureType.MULTI_CATEGORICAL:
        if is_list:
            if any(isinstance(v, list | tuple | dict) for v in value):
                raise FeatureValueError(loc, f"feature {spec.name!r} takes a flat list of values")
        elif value is not None and not isinstance(value, str):
            # the bag encoder iterates the value: a number is not a list of values
            raise FeatureValueError(
                loc, f"feature {spec.name!r} takes a list of values; got {type(value).__name__}"
            )
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


def _small(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= _CACHED_STRING_CHARS
    return (kind in _SCALARS or isinstance(value, np.generic)) and value == value


def _cache_key(value: Any) -> Any:
    """A small key that tells apart values the encoder may treat differently, or None.

    The type is part of the key because ``1``, ``1.0`` and ``True`` are equal as dict
    keys but need not encode alike; NaN is never equal to itself, so it is not cached;
    long strings and lists are not cached at all (their number is unbounded).
    """
    kind = type(value)
    key: Any = None
    if _small(value):
        key = (kind, value)
    elif (
        (kind is list or kind is tuple)
        and len(value) <= _CACHED_LIST_LEN
        and all(_small(v) for v in value)
    ):
        key = (kind, tuple((type(v), v) for v in value))
    if key is not None:
        try:
            hash(key)
        except TypeError:  # an exotic numpy scalar
            return None
    return key


def _key_bytes(key: Any) -> int:
    _, value = key
    if isinstance(value, str):
        return 64 + len(value) * 4
    if isinstance(value, tuple):
        return 64 + sum(64 + (len(v) * 4 if isinstance(v, str) else 0) for _, v in value)
    return 64


class NonFiniteEncodingError(ValueError):
    """A numeric value became inf/NaN in encoding (e.g. standardised by a tiny std)."""


class SideCache:
    """One-row encodings of user/context values, an LRU bounded in bytes.

    The encoder's per-call numpy work costs far more than the lookup, and users and
    contexts repeat. Only small values are keys (strings of at most 64 characters,
    numbers, short lists of those), and the entries' estimated size (key, tensor data
    and a fixed per-entry overhead) never exceeds ``max_bytes``: the least recently
    used entries go first. The cached tensors are shared between requests and must not
    be written to (the scoring code only reads and ``expand``s them).

    Args:
        encoder: the artifact's feature encoder.
        max_bytes: byte budget (0 disables the cache).
    """

    def __init__(self, encoder: FeatureEncoder, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._encoder = encoder
        self.max_bytes = max_bytes
        self.bytes = 0
        # (feature name, cache key) -> (encoding with batch size 1, its size estimate)
        self._entries: OrderedDict[tuple[str, Any], tuple[torch.Tensor, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def encode(self, name: str, value: Any) -> torch.Tensor:
        """Feature ``name`` of one row holding ``value``, encoded: batch size 1.

        Raises:
            NonFiniteEncodingError: a numeric value that is not finite once encoded.
        """
        key = _cache_key(value) if self.max_bytes else None
        entry = None
        if key is not None:
            entry = (name, key)
            with self._lock:
                hit = self._entries.get(entry)
                if hit is not None:
                    self._entries.move_to_end(entry)
                    return hit[0]
        array = np.ascontiguousarray(self._encoder.encode_column(name, [value]))
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise NonFiniteEncodingError(f"feature {name!r}: {value!r} is not finite once encoded")
        encoded = torch.from_numpy(array)
        if entry is not None:
            size = _key_bytes(key) + encoded.nbytes + _ENTRY_OVERHEAD_BYTES
            with self._lock:
                if entry not in self._entries and size <= self.max_bytes:
                    self._entries[entry] = (encoded, size)
                    self.bytes += size
                    while self.bytes > self.max_bytes:
                        _, (_, dropped) = self._entries.popitem(last=False)
                        self.bytes -= dropped
        return encoded
