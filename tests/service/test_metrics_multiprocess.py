"""Multiprocess metric files of dead workers: which are dropped and which are kept.

A real child process writes its metric files into a real multiprocess directory and is
SIGKILLed (it runs no cleanup); the end-to-end case over uvicorn is
tests/suites/reliability/test_killed_worker_metrics.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from service.metrics import dead_worker_pids, forget_dead_workers

WRITER = """
import sys, time
from prometheus_client import Counter, Gauge
Gauge("rr_info", "h", ["version"], multiprocess_mode="livemax").labels("v1").set(1)
Counter("rr_requests", "h").inc(5)
print("ready", flush=True)
time.sleep(60)
"""


def start_writer(directory: str) -> subprocess.Popen:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def exposition(directory: str) -> str:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry).decode()


def test_a_killed_writers_live_gauges_are_dropped_and_its_counters_kept(tmp_path):
    directory = str(tmp_path)
    alive, killed = start_writer(directory), start_writer(directory)
    try:
        assert dead_worker_pids(directory) == []
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert dead_worker_pids(directory) == [killed.pid]
        assert forget_dead_workers(directory) == [killed.pid]
        files = sorted(os.listdir(directory))
        assert f"gauge_livemax_{killed.pid}.db" not in files
        assert f"gauge_livemax_{alive.pid}.db" in files
        assert f"counter_{killed.pid}.db" in files  # its counts happened
        text = exposition(directory)
        assert 'rr_info{version="v1"} 1.0' in text
        assert "rr_requests_total 10.0" in text  # both writers' counts
        alive.send_signal(signal.SIGKILL)
        alive.wait()
        forget_dead_workers(directory)
        assert 'rr_info{version="v1"}' not in exposition(directory)
    finally:
        for proc in (alive, killed):
            proc.kill()
            proc.wait()


def test_a_killed_but_unreaped_writer_counts_as_dead(tmp_path):
    directory = str(tmp_path)
    proc = start_writer(directory)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        # not waited for: a zombie until reaped, as a worker its supervisor has not polled yet
        for _ in range(500):
            with open(f"/proc/{proc.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert dead_worker_pids(directory) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
