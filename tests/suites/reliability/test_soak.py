"""The soak benchmark's measurements (``bench/serve/soak.py``) and a short run.

The soak itself is a benchmark command (minutes long, figures in
docs/RELIABILITY.md); here its memory accounting is checked against a process
whose RSS is known, and the command runs for a few seconds on the tiny world
(slow): zero failed requests and the server's RSS growth under the soak's bound
(10 %, median of the first vs the last 2 s of a 10 s run), asserted here, not only through
the command's verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.serve.loadgen import RunResult
from bench.serve.soak import group_rss_bytes, main, rss_growth, windows
from tests.helpers import service as sf

RSS_GROWTH_BOUND = 0.10  # the soak's default --max-rss-growth
ALLOCATE = "import sys, time; b = bytearray(int(sys.argv[1])); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(60)"  # noqa: E501


def rss_of_child(size: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", ALLOCATE, str(size)], start_new_session=True,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return group_rss_bytes(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_group_rss_counts_the_memory_a_process_touches():
    small, large = rss_of_child(1 << 20), rss_of_child(200 << 20)
    assert small > 0
    # 199 MiB more touched pages; allow for the interpreter's own noise
    assert 190 << 20 < large - small < 210 << 20
    assert group_rss_bytes(os.getpgid(0)) > 0


def test_rss_growth_compares_the_medians_of_the_first_and_last_window():
    samples = [(float(t), 100) for t in range(10)] + [(float(t), 130) for t in range(10, 30)]
    samples[0] = (0.0, 1000)  # one spike in the first window does not move its median
    growth = rss_growth(samples, window_s=5.0)
    assert growth["start_bytes"] == 100 and growth["end_bytes"] == 130
    assert growth["growth"] == pytest.approx(0.30)
    assert growth["max_bytes"] == 1000


def test_windows_count_errors_by_due_time():
    n = 20
    result = RunResult(
        rate=10.0, duration_s=2.0, start=0.0,
        due=[i / 10 for i in range(n)], sent=[i / 10 for i in range(n)],
        done=[i / 10 + 0.005 for i in range(n)], status=[200] * n,
        error=[None] * 15 + ["timeout"] * 5, server_ms=[1.0] * n,
    )  # fmt: skip
    got = windows(result, window_s=1.0)
    assert [(w["requests"], w["errors"]) for w in got] == [(10, 0), (10, 5)]
    assert got[0]["p99_ms"] == pytest.approx(5.0)


@pytest.mark.slow
def test_a_short_soak_of_the_tiny_world_passes_and_writes_its_json(tmp_path):
    world = sf.make_repo(tmp_path)
    out = tmp_path / "soak.json"
    code = main(
        ["--repo", str(world["repo"]), "--features", str(world["data"]), "--out", str(out),
         "--duration", "10", "--warmup", "1", "--rate", "20", "--rss-window", "2",
         "--candidates", "50", "--context"]
    )  # fmt: skip
    document = json.loads(out.read_text())
    assert code == 0, document
    assert document["summary"]["requests"] == 200 and document["summary"]["errors"] == 0
    assert document["server_status_codes"] == {"200": 220.0}  # warm-up + measured
    assert document["rss"]["start_bytes"] > 0 and len(document["rss_samples"]) >= 10
    assert document["criteria"]["max_rss_growth"] == RSS_GROWTH_BOUND
    assert document["rss"]["growth"] < RSS_GROWTH_BOUND, document["rss"]
    assert document["passed"] is True
