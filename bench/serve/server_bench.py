"""Load against one server process (service, naive baseline or null server): runs at
a rate, optional find-max search, and the server's CPU time per request."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.common.percentiles import median
from bench.common.processes import ServerProcess
from bench.serve.config import SUSTAINED_P99_MS, ServeBenchConfig
from bench.serve.findmax import find_max_rate
from bench.serve.loadgen import build_request, run_load
from bench.serve.workload import Workload

ROOT = Path(__file__).resolve().parents[2]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3); pgrp is field 5, utime 14, stime 15
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_idle(
    pgid: int, busy_below: float = 0.1, window_s: float = 0.5, limit_s: float = 30.0
) -> bool:
    """Wait until the server's processes use < ``busy_below`` of a core; False on timeout.

    An overloaded server keeps working on requests the client already gave up
    on; the next run must not inherit that work.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = group_cpu_seconds(pgid)
        time.sleep(window_s)
        if (group_cpu_seconds(pgid) - before) / window_s < busy_below:
            return True
    return False


def median_summary(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-key median over runs of every numeric figure (``None`` when any run lacks it)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if any(isinstance(v, bool) or not isinstance(v, int | float | None) for v in values):
            continue
        out[key] = None if any(v is None for v in values) else median(values)
    out["errors"] = sum(r["errors"] for r in runs)
    return out


# ----------------------------------------------------------------------------- one server


class ServerBench:
    """Runs the load against one server process (service or naive)."""

    def __init__(
        self, cfg: ServeBenchConfig, workload: Workload, log: Callable[[str], None]
    ) -> None:
        self.cfg = cfg
        self.workload = workload
        self.log = log

    def measure(
        self,
        name: str,
        cmd: list[str],
        port: int,
        *,
        find_max: bool,
        start_rate: float,
        rate: float | None = None,
        sustained: bool = True,
    ) -> dict[str, Any]:
        """``cfg.runs`` runs at ``rate`` (default ``cfg.rate``), then optionally find-max.

        Args:
            sustained: with ``find_max``, also search the sustained throughput (p99 within
                :data:`SUSTAINED_P99_MS`); when False only if no rate met the SLO.
        """
        return self.measure_bodies(
            name,
            cmd,
            port,
            [self.workload],
            find_max=find_max,
            start_rate=start_rate,
            rate=rate,
            sustained=sustained,
        )[self.workload.body_format]

    # Long (~90 lines): the run closure shares the server process, its restart and the
    # payloads of each body format; split apart it would pass them all around.
    def measure_bodies(
        self,
        name: str,
        cmd: list[str],
        port: int,
        workloads: list[Workload],
        *,
        find_max: bool,
        start_rate: float,
        rate: float | None = None,
        sustained: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """:meth:`measure` for each workload (body format) against one server process.

        Returns:
            ``{body_format: {"runs", "median"[, "find_max", "find_max_sustained"]}}``.
        """
        cfg = self.cfg
        rate = rate or cfg.rate
        env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "ROCKETRANK_TORCH_THREADS": str(cfg.threads),
        }
        out: dict[str, dict[str, Any]] = {}
        with ServerProcess(cmd, port, env=env, cwd=ROOT) as server:
            for workload in workloads:
                label = f"{name}/{workload.body_format}"
                payloads = [
                    build_request("127.0.0.1", port, "/v1/rank", b, h)
                    for b, h in zip(workload.bodies, workload.headers)
                ]
                out[workload.body_format] = self._measure_one(
                    label, server, port, payloads, find_max, start_rate, rate, sustained
                )
        return out

    def _measure_one(
        self,
        name: str,
        server: ServerProcess,
        port: int,
        payloads: list[bytes],
        find_max: bool,
        start_rate: float,
        rate: float,
        sustained: bool,
    ) -> dict[str, Any]:
        cfg = self.cfg

        def load(rate: float, duration: float, warmup: float) -> dict[str, Any]:
            assert server.proc is not None
            if not wait_idle(server.proc.pid):
                # A backlog of abandoned requests would slow the next run: start afresh.
                self.log(f"  {name} still busy with abandoned requests: restarting it")
                server.stop()
                server.start()
            kwargs = {
                "timeout_s": cfg.timeout,
                "max_connections": cfg.max_connections,
                "initial_connections": min(8, cfg.max_connections),
            }
            if warmup > 0:
                run_load("127.0.0.1", port, payloads, rate, warmup, **kwargs)
            server_cpu = group_cpu_seconds(server.proc.pid)
            client_cpu = time.process_time()
            res = run_load("127.0.0.1", port, payloads, rate, duration, **kwargs)
            client_cpu = time.process_time() - client_cpu
            server_cpu = group_cpu_seconds(server.proc.pid) - server_cpu
            s = res.summary()
            # CPU time per request is far less sensitive to noisy neighbours than latency:
            # 1000 / server_cpu_ms_per_request bounds one worker's throughput.
            # per *answered* request: CPU burnt on abandoned requests counts against the server
            s["server_cpu_ms_per_request"] = server_cpu * 1e3 / s["ok"] if s["ok"] else None
            s["client_cpu_ms_per_request"] = client_cpu * 1e3 / max(s["requests"], 1)
            self.log(
                f"  {name} @ {rate:7.1f}/s: qps {s['qps']:7.1f}  errors {s['errors']:4d}  "
                f"p50 {_fmt(s['p50_ms'])}  p99 {_fmt(s['p99_ms'])} ms  "
                f"server p50 {_fmt(s['server_time_p50_ms'])} ms  "
                f"server CPU {_fmt(s['server_cpu_ms_per_request'])} ms/req"
            )
            return s

        runs = [load(rate, cfg.duration, cfg.warmup) for _ in range(cfg.runs)]
        result: dict[str, Any] = {"runs": runs, "median": median_summary(runs)}
        if find_max:
            probe_s = cfg.probe_duration or cfg.duration
            search = find_max_rate(
                lambda r: load(r, probe_s, 1.0),
                cfg.slo,
                start_rate=start_rate,
                max_rate=cfg.max_rate,
                min_rate=0.5,
                max_probes=cfg.max_probes,
            )
            result["find_max"] = search.to_dict()
            result["find_max"]["slo_p99_ms"] = cfg.slo
            if not sustained and search.max_rate > 0:
                return result
            found = find_max_rate(
                lambda r: load(r, probe_s, 1.0),
                SUSTAINED_P99_MS,
                start_rate=start_rate,
                max_rate=cfg.max_rate,
                min_rate=0.5,
                max_probes=cfg.max_probes,
            )
            result["find_max_sustained"] = found.to_dict()
            result["find_max_sustained"]["slo_p99_ms"] = SUSTAINED_P99_MS
        return result


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.2f}"
