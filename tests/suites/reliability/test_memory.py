"""Bounded memory from unauthenticated requests: 500 rank requests each carrying a
unique 1 MB value (in context, user_features and inline item features, in turn)
against ``rocketrank serve`` under uvicorn with the default limits. The worker's RSS
(/proc) grows by less than 50 MB; no answer is a 5xx. Before the fix each value was
accepted and cached (~1 MB per request, held until the next model swap)."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from tests.helpers import reliability as rf
from tests.helpers import service as sf
from tests.helpers.memory import rss_bytes

pytestmark = pytest.mark.slow

USER = int(sf.USER_IDS[7])
IDS = [int(i) for i in sf.ITEM_IDS[:50]]
N_REQUESTS = 500
RSS_BOUND = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("memory"))


def body(i: int) -> bytes:
    value = f"{i:08d}" + "v" * (1_000_000 - 8)  # unique, 1 MB
    where = i % 3
    request: dict[str, Any] = {"user_id": USER, "candidates": IDS, "stage": "cascade"}
    if where == 0:
        request["context"] = {"hour": 10, "device": value}
    elif where == 1:
        request["user_features"] = {"gender": value}
    else:
        request["candidates"] = [{"item_id": IDS[0], "features": {"category": value}}, *IDS[1:]]
    return json.dumps(request).encode()


def test_unique_1mb_values_do_not_grow_the_worker(world):
    args = ["--repo", str(world["repo"]), "--features", str(world["data"])]
    with rf.running(args) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        normal = json.dumps({"user_id": USER, "candidates": IDS}).encode()
        for _ in range(50):  # warm the allocator and the caches first
            conn.request("POST", "/v1/rank", normal, {"Content-Type": "application/json"})
            assert conn.getresponse().read() and True
        before = rss_bytes(server.proc.pid)
        statuses: dict[int, int] = {}
        for i in range(N_REQUESTS):
            conn.request("POST", "/v1/rank", body(i), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status < 500, raw[:300]
            if resp.status == 422:
                loc = json.loads(raw)["detail"][0]["loc"]
                assert loc[-1] in ("device", "gender", "category"), loc
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        after = rss_bytes(server.proc.pid)
        conn.close()
    growth = after - before
    rf.record_figure(
        "unique_1mb_values",
        requests=N_REQUESTS,
        statuses=statuses,
        rss_before_mib=round(before / 2**20, 1),
        rss_after_mib=round(after / 2**20, 1),
        growth_mib=round(growth / 2**20, 1),
    )
    assert growth < RSS_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
