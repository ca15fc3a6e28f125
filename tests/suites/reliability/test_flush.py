"""Redis flushed under load (``FLUSHALL`` on a private throwaway redis-server, never the
shared one): the service notices that its feature version is gone within the check
interval and answers ``degraded: true`` (never "every user unknown"), the
``feature_store_up`` gauge drops to 0, and once ``features load`` has run again it
recovers by itself. No failed request throughout."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from service.commands.features import load_features
from tests.helpers import reliability as rf
from tests.helpers import service as sf

pytestmark = [pytest.mark.slow, pytest.mark.redis]

USER = int(sf.USER_IDS[9])
BODY = {
    "user_id": USER,
    "context": {"hour": 8, "device": "web"},
    "candidates": [int(i) for i in sf.ITEM_IDS[:40]],
}
ENV = {
    "ROCKETRANK_REDIS_CHECK_INTERVAL_S": "0.5",
    "ROCKETRANK_BREAKER_COOLDOWN_S": "0.5",
    "ROCKETRANK_BREAKER_FAILURES": "2",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("flush"))


def wait_until(load: rf.Load, since: float, ok, timeout: float = 30.0) -> rf.Answer:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for answer in load.since(since):
            if ok(answer):
                return answer
        time.sleep(0.02)
    raise AssertionError(f"no matching answer within {timeout} s")


def test_flushall_under_load_degrades_and_recovers_after_features_load(throwaway_redis, world):
    prefix = "rocketrank-flush:"
    client = redis.Redis.from_url(throwaway_redis.url)
    load_features(client, world["data"], prefix)
    args = ["--repo", str(world["repo"]), "--redis", throwaway_redis.url, "--redis-prefix", prefix]
    with rf.running(args, ENV) as server, rf.Load(server.base, BODY, clients=2) as load:
        load.wait_for(30)
        assert not any(a.body["degraded"] for a in load.answers)
        client.flushall()  # the throwaway server only
        flushed = time.monotonic()
        first_degraded = wait_until(load, flushed, lambda a: a.status == 200 and a.body["degraded"])
        detect_s = first_degraded.done - flushed
        time.sleep(1.0)
        up_during = rf.metric(server.base, "rocketrank_feature_store_up", store="redis")
        during = [a for a in load.since(first_degraded.done) if a.status == 200]
        load_features(client, world["data"], prefix)
        back = time.monotonic()
        first_ok = wait_until(load, back, lambda a: a.status == 200 and not a.body["degraded"])
        load.wait_for(len(load.answers) + 20)
        answers = load.stop()
        after = load.since(first_ok.done)
        up_after = rf.metric(server.base, "rocketrank_feature_store_up", store="redis")
    client.close()
    rf.record_figure(
        "redis_flushall",
        requests=len(answers),
        errors=sum(a.status != 200 for a in answers),
        detect_s=round(detect_s, 3),
        recovery_s=round(first_ok.done - back, 3),
        degraded=sum(a.body["degraded"] for a in answers if a.status == 200),
    )
    assert {a.status for a in answers} == {200}
    # while the version was gone: degraded, not "every user unknown" (the old behaviour)
    assert during and all(a.body["degraded"] and not a.body["unknown_user"] for a in during)
    assert up_during == 0 and up_after == 1
    assert after and not any(a.body["degraded"] or a.body["unknown_user"] for a in after)
