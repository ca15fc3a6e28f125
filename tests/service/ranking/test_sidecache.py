"""The per-feature cache of user/context encodings tells apart values that may encode
differently and never caches what cannot be looked up again."""

from __future__ import annotations

import numpy as np

from service.ranking.values import _cache_key


def test_equal_values_of_different_types_get_different_keys() -> None:
    keys = {_cache_key(1), _cache_key(1.0), _cache_key(True), _cache_key(np.int64(1))}
    assert len(keys) == 4
    assert _cache_key("1") != _cache_key(1)
    assert _cache_key([1, 2]) != _cache_key((1, 2))
    assert _cache_key([1, 2]) != _cache_key([1.0, 2])


def test_the_same_value_gets_the_same_key() -> None:
    assert _cache_key("ios") == _cache_key("ios")
    assert _cache_key(None) == _cache_key(None)
    assert _cache_key(["a", "b"]) == _cache_key(["a", "b"])


def test_values_that_cannot_be_cached_get_no_key() -> None:
    assert _cache_key(float("nan")) is None
    assert _cache_key(np.float64("nan")) is None
    assert _cache_key([1, float("nan")]) is None
    assert _cache_key({"a": 1}) is None
    assert _cache_key([[1], [2]]) is None
    assert _cache_key(np.array([1, 2])) is None
