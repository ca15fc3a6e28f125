"""The service as it is deployed: ``rocketrank serve`` under uvicorn, over real HTTP.

Covers what TestClient cannot: the CLI, uvicorn's body handling, a hot reload
while clients keep sending requests, several workers sharing Prometheus
metrics, and a clean shutdown on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import service as sf

TOKEN = "http-token"
USER = int(sf.USER_IDS[5])
IDS = [int(i) for i in sf.ITEM_IDS[:40]]
BODY = {"user_id": USER, "context": {"hour": 7, "device": "android"}, "candidates": IDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sf.make_repo(tmp_path_factory.mktemp("svc-http"))


@pytest.fixture(scope="module")
def server(world):
    proc = sf.ServiceProcess(
        [
            "--repo",
            str(world["repo"]),
            "--features",
            str(world["data"]),
            "--reload-interval",
            "0.2",
        ],
        env={"ROCKETRANK_ADMIN_TOKEN": TOKEN, "ROCKETRANK_MAX_CANDIDATES": "1000"},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_rank_over_http_matches_the_models(server, world):
    status, body = sf.http("POST", server.base + "/v1/rank", {**BODY, "stage": "fine", "top_k": 40})
    assert status == 200
    expected = sf.reference_scores(
        world["repo"], "fine", body["model_versions"]["fine"], sf.user_row(world["users"], USER),
        BODY["context"], sf.item_rows(world["items"], IDS),
    )  # fmt: skip
    got = {it["item_id"]: it["score"] for it in body["items"]}
    np.testing.assert_allclose([got[i] for i in IDS], expected, atol=1e-5)
    status, err = sf.http("POST", server.base + "/v1/rank", {**BODY, "candidates": [1] * 1001})
    assert status == 422 and err["detail"][0]["loc"] == ["body", "candidates"]
    status, err = sf.http("POST", server.base + "/v1/rank", {**BODY, "request_id": "x" * 5_000_000})
    assert status == 413


def test_hot_reload_under_concurrent_requests_fails_no_request(server, world):
    serving = sf.http("POST", server.base + "/v1/rank", BODY)[1]["model_versions"]["fine"]
    stop = threading.Event()
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            status, body = sf.http("POST", server.base + "/v1/rank", BODY)
            version = body.get("model_versions", {}).get("fine") if status == 200 else None
            with lock:
                results.append((status, version))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    published = []
    try:
        for seed in (31, 32, 33):
            published.append(
                sf.publish(
                    world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=seed
                )
            )
            status, answer = sf.http(
                "POST", server.base + "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert status == 200, answer
        # and one through the pointer watcher alone
        published.append(
            sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=34)
        )
        deadline = time.monotonic() + 30
        while not any(v == published[-1] for _, v in results[-5:]):
            assert time.monotonic() < deadline, "the watcher never served the last version"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    statuses = {s for s, _ in results}
    assert statuses == {200}, f"failed requests during reload: {statuses}"
    assert {v for _, v in results} >= {serving, published[-1]}


@pytest.mark.slow
def test_two_workers_share_metrics_in_multiprocess_mode(world, tmp_path):
    proc = sf.ServiceProcess(
        ["--repo", str(world["repo"]), "--features", str(world["data"]), "--workers", "2"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")},
    )
    try:
        proc.wait_ready(timeout=120)
        n = 30
        for _ in range(n):
            assert sf.http("POST", proc.base + "/v1/rank", BODY)[0] == 200
        status, text = sf.http("GET", proc.base + "/metrics")
        assert status == 200
    finally:
        proc.stop()
    totals = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[(s.name, tuple(sorted(s.labels.items())))] = s.value
    # every request counted once, whichever worker served it
    assert totals[("rocketrank_requests_total", (("code", "200"), ("stage", "cascade")))] == n
    assert totals[("rocketrank_request_duration_seconds_count", (("stage", "cascade"),))] == n
    info = [k for k in totals if k[0] == "rocketrank_model_info" and totals[k] == 1]
    assert len(info) == 2


def test_sigterm_turns_readiness_false_first_then_shuts_down_cleanly(world):
    proc = sf.ServiceProcess(
        ["--repo", str(world["repo"]), "--features", str(world["data"])],
        env={"ROCKETRANK_SHUTDOWN_DELAY_S": "4"},
    )
    proc.wait_ready()
    assert sf.http("POST", proc.base + "/v1/rank", BODY)[0] == 200
    os.killpg(proc.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while (answer := sf.http("GET", proc.base + "/readyz"))[0] != 503:
        assert time.monotonic() < deadline, "readiness stayed true after SIGTERM"
        time.sleep(0.02)
    assert answer[1]["shutting_down"] is True
    # still answering while load balancers drain
    assert sf.http("POST", proc.base + "/v1/rank", BODY)[0] == 200
    proc.proc.wait(timeout=30)
    log = proc.stop()
    # uvicorn re-raises the signal after a graceful shutdown
    assert proc.proc.returncode in (0, -15), log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
