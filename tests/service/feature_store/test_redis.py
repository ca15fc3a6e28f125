"""The Redis feature store against a real Redis server: loading, serving, outage
and recovery. Keys live under a per-test prefix (deleted afterwards); the outage
test kills and restarts a private throwaway redis-server."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.commands.features import load_features
from service.feature_store.breaker import BreakerState, CircuitBreaker
from service.feature_store.redis_store import RedisFeatureStore, RedisLayout
from service.settings import Settings
from tests.helpers import service as sf

pytestmark = pytest.mark.redis

USER = int(sf.USER_IDS[4])
IDS = [int(i) for i in sf.ITEM_IDS[:30]] + [sf.UNKNOWN_ITEM]
BODY = {"user_id": USER, "context": {"hour": 9, "device": "web"}, "candidates": IDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-redis"))


def redis_settings(world: dict[str, Any], url: str, prefix: str, **overrides: Any) -> Settings:
    base = {
        "repo": world["repo"],
        "redis_url": url,
        "redis_prefix": prefix,
        "reload_interval_s": 0.1,
        "item_refresh_s": 0,
        "breaker_failures": 2,
        "breaker_cooldown_s": 0.2,
    }
    return Settings(**{**base, **overrides})


def _keys(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    return {k: client.get(k) for k in client.scan_iter(match=prefix + "*", count=1000)}


def test_features_load_is_idempotent_and_moves_the_pointer_last(redis_url, key_prefix, world):
    client = redis.Redis.from_url(redis_url)
    first = load_features(client, world["data"], key_prefix)
    snapshot = _keys(client, key_prefix)
    second = load_features(client, world["data"], key_prefix)
    assert second["version"] == first["version"]
    assert _keys(client, key_prefix) == snapshot
    layout = RedisLayout(key_prefix)
    version = first["version"]
    assert client.get(layout.current).decode() == version
    assert first["users"] == sf.N_USERS and first["items"] == sf.N_ITEMS
    # one key per user, the item chunks, the meta key and the pointer
    assert len(snapshot) == sf.N_USERS + first["item_chunks"] + 2
    stored = orjson.loads(client.get(layout.user(version, USER)))
    row = sf.user_row(world["users"], USER)
    assert stored == {"age": row["age"], "gender": row["gender"]}
    client.close()


def test_a_new_version_written_without_promotion_is_not_followed(redis_url, key_prefix, world):
    client = redis.Redis.from_url(redis_url)
    load_features(client, world["data"], key_prefix, version="v1")
    load_features(client, world["data"], key_prefix, version="v2", promote=False)
    assert client.get(RedisLayout(key_prefix).current) == b"v1"
    store = RedisFeatureStore(redis_url, prefix=key_prefix)
    assert store.items().version == "v1"
    assert store.get_user(USER).found
    store.close()
    client.close()


def test_scores_from_the_redis_store_equal_the_embedded_store(redis_url, key_prefix, world):
    client = redis.Redis.from_url(redis_url)
    load_features(client, world["data"], key_prefix)
    client.close()
    embedded = Settings(repo=world["repo"], features_dir=world["data"], reload_interval_s=0)
    with TestClient(create_app(embedded)) as c:
        want = c.post("/v1/rank", json={**BODY, "stage": "cascade"}).json()
    with TestClient(create_app(redis_settings(world, redis_url, key_prefix))) as c:
        got = c.post("/v1/rank", json={**BODY, "stage": "cascade"}).json()
        unknown = c.post("/v1/rank", json={**BODY, "user_id": sf.UNKNOWN_USER}).json()
    assert got["degraded"] is False
    assert got["items"] == want["items"]
    assert got["unknown_item_ids"] == [sf.UNKNOWN_ITEM]
    assert unknown["unknown_user"] is True and unknown["degraded"] is False


def _errors(client: TestClient) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "rocketrank_feature_store_errors_total" and s.labels["store"] == "redis":
                return s.value
    raise AssertionError("feature_store_errors_total{store=redis} not exposed")


def test_redis_outage_degrades_without_errors_and_recovers_by_itself(throwaway_redis, world):
    prefix = "rocketrank-test-outage:"
    client = redis.Redis.from_url(throwaway_redis.url)
    load_features(client, world["data"], prefix)
    client.close()
    settings = redis_settings(world, throwaway_redis.url, prefix, redis_timeout_ms=20)
    with TestClient(create_app(settings)) as c:
        healthy = c.post("/v1/rank", json=BODY).json()
        assert healthy["degraded"] is False

        throwaway_redis.stop()
        answers = [c.post("/v1/rank", json=BODY) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        assert all(a.json()["degraded"] is True for a in answers)
        # defaults replace the user's features; items still come from memory
        expected = sf.reference_scores(
            world["repo"], "fine", world["versions"]["fine"], {"user_id": USER},
            BODY["context"], sf.item_rows(world["items"], IDS),
        )  # fmt: skip
        fine_only = c.post("/v1/rank", json={**BODY, "stage": "fine", "top_k": len(IDS)}).json()
        got = {it["item_id"]: it["score"] for it in fine_only["items"]}
        np.testing.assert_allclose([got[i] for i in IDS], expected, atol=1e-5)
        assert _errors(c) >= 1
        assert c.get("/readyz").status_code == 200

        throwaway_redis.start()  # an empty server: the data comes back with a fresh load
        client = redis.Redis.from_url(throwaway_redis.url)
        load_features(client, world["data"], prefix)
        client.close()
        deadline = time.monotonic() + 30
        while True:
            answer = c.post("/v1/rank", json=BODY)
            assert answer.status_code == 200
            if answer.json()["degraded"] is False:
                break
            assert time.monotonic() < deadline, "the service never recovered from the outage"
            time.sleep(0.05)
        assert answer.json()["items"] == healthy["items"]


def test_the_service_starts_while_redis_is_down_and_catches_up(throwaway_redis, world):
    prefix = "rocketrank-test-late:"
    throwaway_redis.stop()
    settings = redis_settings(world, throwaway_redis.url, prefix)
    with TestClient(create_app(settings)) as c:
        first = c.post("/v1/rank", json=BODY)
        assert first.status_code == 200
        assert first.json()["degraded"] is True
        throwaway_redis.start()
        client = redis.Redis.from_url(throwaway_redis.url)
        load_features(client, world["data"], prefix)
        client.close()
        deadline = time.monotonic() + 30
        while c.post("/v1/rank", json=BODY).json()["degraded"]:
            assert time.monotonic() < deadline, "item features were never loaded"
            time.sleep(0.05)
        listing = c.get("/v1/models").json()
        assert {m["items"] for m in listing["models"]} == {sf.N_ITEMS}


def test_circuit_breaker_opens_probes_after_the_cool_down_and_closes():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=1.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    now[0] = 1.5
    assert breaker.allow()  # the single half-open probe
    assert not breaker.allow()  # no second probe while the first is out
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 3.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_new_item_features_are_picked_up_on_schedule(redis_url, key_prefix, world, tmp_path):
    client = redis.Redis.from_url(redis_url)
    load_features(client, world["data"], key_prefix, version="v1")
    settings = redis_settings(world, redis_url, key_prefix, item_refresh_s=0.2)
    item = int(sf.ITEM_IDS[3])
    body = {**BODY, "candidates": [item], "stage": "fine"}
    with TestClient(create_app(settings)) as c:
        before = c.post("/v1/rank", json=body).json()["items"][0]["score"]
        changed = world["items"].copy()
        changed.loc[changed["item_id"] == item, "price"] = 5000.0
        sf.write_feature_tables(tmp_path)  # users as before
        changed.to_parquet(tmp_path / "items.parquet", index=False)
        load_features(client, tmp_path, key_prefix, version="v2")
        row = changed[changed["item_id"] == item].iloc[0].to_dict()
        expected = sf.reference_scores(
            world["repo"], "fine", world["versions"]["fine"],
            sf.user_row(world["users"], USER), BODY["context"], [row],
        )[0]  # fmt: skip
        assert expected != pytest.approx(before, abs=1e-4)
        deadline = time.monotonic() + 30
        while True:
            answer = c.post("/v1/rank", json=body).json()
            if answer["items"][0]["score"] == pytest.approx(float(expected), abs=1e-5):
                break
            assert time.monotonic() < deadline, "the new item features were never served"
            time.sleep(0.05)
        assert answer["degraded"] is False
        assert {m["items_version"] for m in c.get("/v1/models").json()["models"]} == {"v2"}
    client.close()
