"""Request-supplied feature values: shape checks and the per-feature encoding cache."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from models.contract.features import FeatureEncoder, FeatureSpec, FeatureType

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Distinct values cached per user/context feature; beyond it values are encoded per request.
_SIDE_CACHE_LIMIT = 50_000
_SCALARS = frozenset({str, int, float, bool, type(None)})


class FeatureValueError(ValueError):
    """A request-supplied feature value has the wrong shape for its feature.

    Attributes:
        loc: where the value was (e.g. ``("user_features", "age")``).
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


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


class SideCache:
    """One-row encodings of user/context values, cached per feature for hashable values.

    The encoder's per-call numpy work costs far more than the lookup, and users and
    contexts repeat. The cached tensors are shared between requests and must not be
    written to (the scoring code only reads and ``expand``s them).

    Args:
        encoder: the artifact's feature encoder.
    """

    def __init__(self, encoder: FeatureEncoder) -> None:
        self._encoder = encoder
        # feature name -> cache key of a raw value -> its encoding (batch size 1)
        self._cache: dict[str, dict[Any, torch.Tensor]] = {}

    def encode(self, name: str, value: Any) -> torch.Tensor:
        """Feature ``name`` of one row holding ``value``, encoded: batch size 1."""
        key = _cache_key(value)
        cache = self._cache.setdefault(name, {})
        if key is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
        encoded = torch.from_numpy(np.ascontiguousarray(self._encoder.encode_column(name, [value])))
        if key is not None and len(cache) < _SIDE_CACHE_LIMIT:
            cache[key] = encoded
        return encoded
