"""The user/context encoding cache is an LRU bounded in bytes, keyed only by small values."""

from __future__ import annotations

from service.ranking.values import SideCache
from tests.helpers import service as sf


def _cache(max_bytes: int) -> SideCache:
    users, items = sf.feature_tables()
    return SideCache(sf.fit_encoder(users, items), max_bytes)


def test_unique_values_never_grow_the_cache_past_its_byte_budget() -> None:
    cache = _cache(64 * 1024)
    for i in range(5_000):
        cache.encode("device", f"device-{i:054d}")  # 61 characters: cacheable
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) < 5_000


def test_long_strings_and_long_lists_are_never_cache_keys() -> None:
    cache = _cache(1 << 20)
    cache.encode("device", "x" * 65)
    cache.encode("device", "y" * 1_000_000)
    cache.encode("gender", ["a"] * 17)
    assert len(cache) == 0 and cache.bytes == 0
    cache.encode("device", "ios")
    assert len(cache) == 1


def test_recently_used_values_survive_eviction() -> None:
    cache = _cache(16 * 1024)
    hot = cache.encode("device", "ios")
    for i in range(2_000):
        cache.encode("device", f"cold-{i}")
        assert cache.encode("device", "ios") is hot  # a hit returns the cached tensor
    assert cache.bytes <= cache.max_bytes


def test_a_zero_budget_disables_the_cache() -> None:
    cache = _cache(0)
    cache.encode("device", "ios")
    assert len(cache) == 0
