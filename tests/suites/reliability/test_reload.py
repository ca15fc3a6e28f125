"""Model rollouts under concurrent load against ``rocketrank serve`` (the pointer watcher).

* A new version every ~2 s, alternating coarse and fine: no failed request, and
  every answer names versions that were really published.
* Broken versions (a flipped byte, a missing file, a wrong spec hash, an
  artifact built for another feature set): each is refused, the old version
  keeps serving every request, ``reloads_total{result="failed"}`` counts it and
  the log names it; a good version published afterwards is picked up.

``tests/service/test_reload.py`` covers the admin-endpoint path, rollback, the NaN
warm-up refusal and one-model-per-request consistency with TestClient;
``tests/service/test_http.py`` a short burst of reloads over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import reliability as rf
from tests.helpers import service as sf

pytestmark = pytest.mark.slow

USER = int(sf.USER_IDS[8])
IDS = [int(i) for i in sf.ITEM_IDS[:60]]
BODY = {
    "user_id": USER,
    "context": {"hour": 18, "device": "web"},
    "candidates": IDS,
    "coarse_top_k": 20,
    "top_k": 10,
}
WATCH = ["--reload-interval", "0.2"]


@pytest.fixture()
def world(tmp_path) -> dict[str, Any]:
    return sf.make_repo(tmp_path)


def serve_args(world: dict[str, Any]) -> list[str]:
    return ["--repo", str(world["repo"]), "--features", str(world["data"]), *WATCH]


def serving(load: rf.Load, stage: str, version: str, timeout: float = 30.0) -> float:
    """Wait until an answer used ``version`` for ``stage``; returns when it arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in reversed(load.answers[-20:]):
            if a.status == 200 and a.body["model_versions"].get(stage) == version:
                return a.done
        time.sleep(0.02)
    raise AssertionError(f"{stage} version {version} was never served")


def test_a_version_every_two_seconds_fails_no_request(world):
    published = {"coarse": {world["versions"]["coarse"]}, "fine": {world["versions"]["fine"]}}
    swaps_s = []
    with rf.running(serve_args(world)) as server, rf.Load(server.base, BODY, clients=3) as load:
        load.wait_for(20)
        for i in range(6):
            stage = ("coarse", "fine")[i % 2]
            kind = "two_tower" if stage == "coarse" else "mlp"
            started = time.monotonic()
            version = sf.publish(
                world["repo"], stage, kind, world["encoder"], world["items"], seed=100 + i
            )
            published[stage].add(version)
            swaps_s.append(serving(load, stage, version) - started)
            time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        load.wait_for(20)
        answers = load.stop()
        successes = rf.metric(server.base, "rocketrank_reloads_total", result="success")

    statuses = {a.status for a in answers}
    assert statuses == {200}, f"failed requests during the rollout: {statuses}"
    seen = {stage: {a.body["model_versions"][stage] for a in answers} for stage in published}
    for stage in published:
        assert seen[stage] <= published[stage], f"{stage}: unpublished versions served"
    # the six new versions were each served (the start-up loads count too)
    assert seen["coarse"] | seen["fine"] >= set().union(*published.values()) - {
        world["versions"]["coarse"],
        world["versions"]["fine"],
    }
    assert successes == 2 + 6
    rf.record_figure(
        "version_every_2s",
        requests=len(answers),
        errors=sum(a.status != 200 for a in answers),
        published=6,
        publish_to_served_max_s=round(max(swaps_s), 2),
        p99_ms=round(rf.percentile([a.ms for a in answers], 99), 1),
    )


def test_broken_versions_are_refused_and_the_old_one_keeps_serving(world):
    old = world["versions"]["fine"]
    refused = {}
    with rf.running(serve_args(world)) as server, rf.Load(server.base, BODY, clients=2) as load:
        load.wait_for(10)
        for n, kind in enumerate(rf.BROKEN_KINDS, start=1):
            refused[kind] = rf.publish_broken(world, kind)
            deadline = time.monotonic() + 30
            while rf.metric(server.base, "rocketrank_reloads_total", result="failed") < n:
                assert time.monotonic() < deadline, f"{kind}: the broken version was not refused"
                time.sleep(0.05)
            load.wait_for(10)
        during = list(load.answers)
        good = sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=5)
        serving(load, "fine", good)
        answers = load.stop()
        failed = rf.metric(server.base, "rocketrank_reloads_total", result="failed")
        info_old = rf.metric(server.base, "rocketrank_model_info", stage="fine", version=old)
        log = server.log()

    assert {a.status for a in answers} == {200}
    assert {a.body["model_versions"]["fine"] for a in during} == {old}
    assert info_old == 0  # the good version replaced it at the end
    assert failed == len(rf.BROKEN_KINDS)  # each refused once, never retried per poll
    reasons = {
        "flipped_byte": "checksum mismatch for model.pt",
        "missing_file": "encoder.json is missing",
        "wrong_spec_hash": "spec hash mismatch",
        "other_feature_set": "needs item feature(s) ['brand']",
    }
    for kind, version in refused.items():
        lines = [line for line in log.splitlines() if f"fine@{version}" in line]
        assert any("refusing" in line and reasons[kind] in line for line in lines), (kind, lines)
    assert "Traceback" not in log
    rf.record_figure(
        "broken_versions",
        kinds=list(rf.BROKEN_KINDS),
        requests=len(answers),
        errors=sum(a.status != 200 for a in answers),
        reloads_failed=failed,
    )
