"""A SIGKILLed uvicorn worker's Prometheus files (multiprocess mode, ``--workers 2``).

One worker is killed with SIGKILL (it cannot clean up), then a new ``fine`` version is
promoted; the surviving worker and the replacement uvicorn starts both serve it. Every
scrape must then show ``model_info`` = 1 for the new version only: the killed worker's
last value (1 for the old version) must not be aggregated any more, and no series is
counted twice. Before the fix the dead worker's ``gauge_livemax_<pid>.db`` stayed and
every scrape reported the old version as still served.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import reliability as rf
from tests.helpers import service as sf

pytestmark = pytest.mark.slow


def workers(parent: int) -> set[int]:
    """Running (not zombie) worker processes of the uvicorn ``parent``, from /proc
    (its other child is multiprocessing's resource tracker)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) != parent or stat[0] in ("Z", "X"):
            continue
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.add(int(entry))
    return found


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def model_info(base: str, stage: str) -> dict[str, float]:
    return {
        dict(labels)["version"]: value
        for (name, labels), value in rf.scrape(base).items()
        if name == "rocketrank_model_info" and dict(labels)["stage"] == stage
    }


def test_a_killed_workers_model_info_is_not_reported_after_it_is_replaced(tmp_path):
    world = sf.make_repo(tmp_path)
    prom = tmp_path / "prom"
    args = ["--repo", str(world["repo"]), "--features", str(world["data"]), "--workers", "2"]
    env = {"PROMETHEUS_MULTIPROC_DIR": str(prom), "ROCKETRANK_RELOAD_INTERVAL_S": "0.2"}
    old = world["versions"]["fine"]
    with rf.running(args, env) as server:
        parent = server.proc.pid

        def both_loaded() -> set[int] | None:
            pids = workers(parent)
            files = {p for p in pids if (prom / f"gauge_livemax_{p}.db").exists()}
            return pids if len(pids) == 2 and files == pids else None

        first = wait_until(both_loaded, 60, "two workers with model_info files")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        new = sf.publish(world["repo"], "fine", "mlp", world["encoder"], world["items"], seed=9)
        second = wait_until(
            lambda: (p := both_loaded()) and victim not in p and p, 60, "a replacement worker"
        )

        def every_worker_serves(version: str) -> bool:
            # either worker answers /readyz: 20 answers all naming the version
            seen = set()
            for _ in range(20):
                status, body = sf.http("GET", server.base + "/readyz")
                seen.add(body["models"].get("fine") if status == 200 else None)
            return seen == {version}

        wait_until(lambda: every_worker_serves(new), 30, f"both workers serving fine@{new}")
        scrapes = [model_info(server.base, "fine") for _ in range(10)]
        coarse = model_info(server.base, "coarse")
        left = sorted(p.name for p in prom.glob(f"gauge_live*_{victim}.db"))
    rf.record_figure(
        "killed_worker_metrics",
        killed=victim,
        workers_before=sorted(first),
        workers_after=sorted(second),
        fine_model_info=scrapes[0],
    )
    assert victim not in second and len(second) == 2
    for info in scrapes:  # each scrape may be answered by either worker
        assert info.get(new) == 1, info
        assert info.get(old, 0) == 0, f"the killed worker's fine@{old} is still reported: {info}"
        assert sum(info.values()) == 1, info  # one served version, counted once
    assert coarse == {world["versions"]["coarse"]: 1}, coarse
    assert left == [], f"the killed worker's live-gauge files are still there: {left}"
