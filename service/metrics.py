"""Prometheus metrics of the scoring service (names pinned in docs/INTERNALS.md).

Each app owns a :class:`ServiceMetrics` with its own registry, so several apps
(tests) never collide in prometheus-client's global registry. When
``PROMETHEUS_MULTIPROC_DIR`` is set (several uvicorn workers), every worker
writes its values to that directory and ``/metrics`` aggregates all workers with
a ``MultiProcessCollector``; the directory must be emptied before the workers
start (``rocketrank serve`` does it).

Live gauges (``model_info`` ``livemax``, ``feature_store_up`` ``livemin``) aggregate
only the workers that still run: a worker drops its files when it exits, and the
files of a worker that died without exiting (SIGKILL, OOM kill) are dropped by the
next worker to start and at every scrape (:func:`forget_dead_workers`), so a killed
worker's last values never outlive it. Counter and histogram files of dead workers
stay: their counts happened, and dropping them would make totals go backwards.
"""

from __future__ import annotations

import glob
import logging
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

PREFIX = "rocketrank_"
# 0.5 ms … 1 s: the service answers in a few ms, the default buckets (≥ 5 ms) cannot show it.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.008,  # the fine-stage SLO: its p99 alert compares exactly at a bucket edge
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)
SHED_REASONS = ("overload", "deadline", "disconnected", "body_timeout")
CANDIDATE_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


log = logging.getLogger(__name__)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: running
    # a killed worker that its supervisor has not reaped yet is a zombie: dead here
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def dead_worker_pids(directory: str) -> list[int]:
    """Pids that have live-gauge files in ``directory`` but no longer run."""
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if pid.isdigit():
            pids.add(int(pid))
    return sorted(pid for pid in pids if not _running(pid))


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live-gauge files of workers that died without exiting; returns their pids."""
    dead = dead_worker_pids(directory)
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return dead


class ServiceMetrics:
    """All service metrics.

    Attributes:
        requests: ``requests_total{stage,code}``.
        request_duration: ``request_duration_seconds{stage}``.
        step_duration: ``step_duration_seconds{step}``; steps: read (body), queue
            (thread-pool wait), parse, feature_fetch, preprocess, coarse_inference,
            fine_inference, postprocess, serialize.
        candidates: ``candidates{stage}`` (candidates per request).
        unknown_ids: ``unknown_ids_total{side}`` (user / item).
        store_errors: ``feature_store_errors_total{store}``.
        store_duration: ``feature_store_duration_seconds{store}``.
        store_bad_values: ``feature_store_bad_values_total{store}``.
        store_up: ``feature_store_up{store}`` (gauge 1/0).
        shed: ``shed_requests_total{reason}`` (admission control).
        degraded: ``degraded_requests_total``.
        model_info: ``model_info{stage,name,version}`` = 1 for the served versions.
        reloads: ``reloads_total{result}`` (success / failed).
    """

    def __init__(self) -> None:
        directory = multiprocess_dir()
        self.multiprocess = directory is not None
        if directory is not None:
            dead = forget_dead_workers(directory)
            if dead:
                log.warning("dropped the live gauges of dead worker(s) %s", dead)
        # In multiprocess mode values live in files; the metric objects need no registry.
        self.registry = CollectorRegistry(auto_describe=True)
        # CPU seconds and resident memory for the dashboard's process panels (in
        # multiprocess mode: of the worker that answers the scrape).
        ProcessCollector(registry=self.registry)
        reg = None if self.multiprocess else self.registry
        self.requests = Counter(
            PREFIX + "requests", "Rank requests by stage and HTTP status code.",
            ["stage", "code"], registry=reg,
        )  # fmt: skip
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds", "Server-side time of a rank request.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.step_duration = Histogram(
            PREFIX + "step_duration_seconds", "Time of one step of a rank request.",
            ["step"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.candidates = Histogram(
            PREFIX + "candidates", "Candidates per rank request.",
            ["stage"], buckets=CANDIDATE_BUCKETS, registry=reg,
        )  # fmt: skip
        self.unknown_ids = Counter(
            PREFIX + "unknown_ids", "Ids unknown to the feature store (scored with defaults).",
            ["side"], registry=reg,
        )  # fmt: skip
        self.store_errors = Counter(
            PREFIX + "feature_store_errors", "Failed or skipped (circuit open) store calls.",
            ["store"], registry=reg,
        )  # fmt: skip
        self.store_duration = Histogram(
            PREFIX + "feature_store_duration_seconds", "Time of one user-feature lookup.",
            ["store"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.store_bad_values = Counter(
            PREFIX + "feature_store_bad_values",
            "Requests whose stored user record held a value the model cannot encode "
            "(replaced by its default, the answer degraded).",
            ["store"], registry=reg,
        )  # fmt: skip
        self.store_up = Gauge(
            PREFIX + "feature_store_up",
            "1 while the last user lookup was answered by the store, 0 while it is "
            "unavailable (down, timing out, circuit open, or its feature version gone).",
            ["store"], registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip
        self.shed = Counter(
            PREFIX + "shed_requests",
            "Rank requests refused or dropped before scoring, by reason "
            "(overload, deadline, disconnected, body_timeout).",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.degraded = Counter(
            PREFIX + "degraded_requests", "Requests answered with default features.",
            registry=reg,
        )  # fmt: skip
        self.model_info = Gauge(
            PREFIX + "model_info", "Served model versions (value 1).",
            ["stage", "name", "version"], registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self.reloads = Counter(
            PREFIX + "reloads", "Model loads by result (success, failed).",
            ["result"], registry=reg,
        )  # fmt: skip
        # Pre-create label sets so every series exists (at 0) before the first event.
        for result in ("success", "failed"):
            self.reloads.labels(result)
        for side in ("user", "item"):
            self.unknown_ids.labels(side)
        for reason in SHED_REASONS:
            self.shed.labels(reason)

    def set_model(self, stage: str, name: str, version: str, previous: str | None) -> None:
        """Record that ``stage`` now serves ``name@version`` (and no longer ``previous``)."""
        if previous is not None and previous != version:
            self.model_info.labels(stage, name, previous).set(0)
        self.model_info.labels(stage, name, version).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers in multiprocess mode)."""
        directory = multiprocess_dir()
        if self.multiprocess and directory is not None:
            forget_dead_workers(directory)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            ProcessCollector(registry=registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def worker_exit(self) -> None:
        """Drop this worker's live gauges from the multiprocess aggregation."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
