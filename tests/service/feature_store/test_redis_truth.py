"""Redis truth: a store whose served feature version is gone is unavailable (degraded),
not empty; malformed meta is a clear error, never a crash; stored values the model
cannot encode degrade the answer instead of blaming the caller; prune deletes old
versions of its own prefix only. Against the shared Redis, under per-test prefixes
(keys are deleted, never flushed)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.commands.features import feature_versions, load_features, prune_features, redact
from service.feature_store.redis_store import RedisFeatureStore, RedisLayout
from service.settings import Settings
from tests.helpers import service as sf

pytestmark = pytest.mark.redis

USER = int(sf.USER_IDS[4])
BODY = {
    "user_id": USER,
    "context": {"hour": 9, "device": "web"},
    "candidates": [int(i) for i in sf.ITEM_IDS[:20]],
    "stage": "fine",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-redis-truth"))


def settings_for(world: dict[str, Any], url: str, prefix: str, **overrides: Any) -> Settings:
    base = {
        "repo": world["repo"],
        "redis_url": url,
        "redis_prefix": prefix,
        "reload_interval_s": 0,
        "item_refresh_s": 0,
        "breaker_failures": 2,
        "breaker_cooldown_s": 0.2,
        "redis_check_interval_s": 0.1,
    }
    return Settings(**{**base, **overrides})


def metric(client: TestClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_for(client: TestClient, predicate, timeout: float = 15.0) -> dict[str, Any]:
    """Send rank requests until one answer satisfies ``predicate``; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.post("/v1/rank", json=BODY)
        assert resp.status_code == 200, resp.text
        if predicate(resp.json()):
            return resp.json()
        assert time.monotonic() < deadline, f"never reached; last answer {resp.json()}"
        time.sleep(0.05)


def test_a_deleted_version_degrades_the_answers_and_recovers_after_features_load(
    redis_url, key_prefix, world
):
    r = redis.Redis.from_url(redis_url)
    version = load_features(r, world["data"], key_prefix)["version"]
    with TestClient(create_app(settings_for(world, redis_url, key_prefix))) as client:
        body = client.post("/v1/rank", json=BODY).json()
        assert body["degraded"] is False and body["unknown_user"] is False
        # what FLUSHALL does to this prefix, without flushing the shared Redis
        layout = RedisLayout(key_prefix)
        r.delete(*[k for k in r.scan_iter(match=key_prefix + "*", count=1000)])
        gone = wait_for(client, lambda b: b["degraded"])
        assert gone["unknown_user"] is False  # unavailable, not "every user unknown"
        assert metric(client, "rocketrank_feature_store_up", store="redis") == 0
        assert client.get("/v1/models").json()["feature_store"]["available"] is False
        load_features(r, world["data"], key_prefix)
        back = wait_for(client, lambda b: not b["degraded"])
        assert back["unknown_user"] is False
        assert metric(client, "rocketrank_feature_store_up", store="redis") == 1
        assert r.get(layout.current).decode() == version
    r.close()


def test_a_missing_user_with_the_version_present_is_unknown_not_degraded(
    redis_url, key_prefix, world
):
    r = redis.Redis.from_url(redis_url)
    load_features(r, world["data"], key_prefix)
    with TestClient(create_app(settings_for(world, redis_url, key_prefix))) as client:
        for _ in range(5):  # some of them carry the version check
            body = client.post("/v1/rank", json={**BODY, "user_id": sf.UNKNOWN_USER}).json()
            assert body["unknown_user"] is True and body["degraded"] is False
            time.sleep(0.05)
    r.close()


@pytest.mark.parametrize(
    "meta",
    [b"[]", b'{"format": 1}', b'{"format": 1, "item_chunks": "x"}', b"not json"],
    ids=["list", "no-item-chunks", "chunks-not-int", "not-json"],
)
def test_malformed_meta_is_a_clear_error_not_a_crash(redis_url, key_prefix, world, meta, caplog):
    r = redis.Redis.from_url(redis_url)
    version = load_features(r, world["data"], key_prefix)["version"]
    layout = RedisLayout(key_prefix)
    good = r.get(layout.meta(version))
    r.set(layout.meta(version), meta)
    store = RedisFeatureStore(redis_url, prefix=key_prefix)  # raised AttributeError/KeyError
    assert not store.items_available()
    assert layout.meta(version) in caplog.text
    store.close()
    # the service starts too, answers degraded, and recovers once the meta is repaired
    with TestClient(create_app(settings_for(world, redis_url, key_prefix))) as client:
        assert client.post("/v1/rank", json=BODY).json()["degraded"] is True
        r.set(layout.meta(version), good)
        wait_for(client, lambda b: not b["degraded"])
    r.close()


def test_bad_stored_user_values_degrade_and_never_blame_the_caller(redis_url, key_prefix, world):
    r = redis.Redis.from_url(redis_url)
    version = load_features(r, world["data"], key_prefix)["version"]
    layout = RedisLayout(key_prefix)
    with TestClient(create_app(settings_for(world, redis_url, key_prefix))) as client:
        for record in ({"age": "old", "gender": "f"}, {"age": 30.0, "gender": {"x": 1}},
                       {"age": [1, 2], "gender": "m"}):  # fmt: skip
            r.set(layout.user(version, USER), orjson.dumps(record))
            resp = client.post("/v1/rank", json=BODY)
            assert resp.status_code == 200, resp.text  # was 422 naming user_features
            assert resp.json()["degraded"] is True
        assert metric(client, "rocketrank_feature_store_bad_values_total", store="redis") == 3
        # the same value sent by the caller is the caller's error
        resp = client.post("/v1/rank", json={**BODY, "user_features": {"age": "old"}})
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", "user_features", "age"]
    r.close()


def test_prune_keeps_current_and_the_newest_and_touches_no_other_prefix(
    redis_url, key_prefix, world
):
    r = redis.Redis.from_url(redis_url)
    for v in ("v1", "v2", "v3"):
        load_features(r, world["data"], key_prefix, version=v, promote=(v == "v2"))
        time.sleep(0.01)  # distinct loaded_at
    other = key_prefix + "other:"  # a longer prefix sharing ours must survive
    load_features(r, world["data"], other, version="v1")
    assert set(feature_versions(r, key_prefix)) == {"v1", "v2", "v3"}
    result = prune_features(r, key_prefix, keep=2)
    assert result["kept"] == ["v2", "v3"] and result["deleted"] == ["v1"]
    layout = RedisLayout(key_prefix)
    assert not list(r.scan_iter(match=f"{key_prefix}v1:*"))
    assert r.exists(layout.meta("v2")) and r.exists(layout.meta("v3"))
    assert r.exists(layout.user("v3", USER))
    assert r.exists(RedisLayout(other).meta("v1")) and r.exists(RedisLayout(other).user("v1", USER))
    assert prune_features(r, key_prefix, keep=1)["deleted"] == ["v3"]
    assert r.get(layout.current) == b"v2" and r.exists(layout.meta("v2"))
    with pytest.raises(ValueError):
        prune_features(r, key_prefix, keep=0)
    r.close()


def test_redis_urls_are_shown_without_their_password():
    assert redact("redis://:hunter2@host:6379/0") == "redis://***@host:6379/0"
    assert redact("redis://user:hunter2@host/0") == "redis://user:***@host/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
