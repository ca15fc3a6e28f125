"""``rocketrank bench serve``: the real service vs the bare model vs the naive baseline.

One invocation, one machine state, three measurements on the same requests:

1. **bare** -- the exported light net in this process on pre-encoded inputs
   (:mod:`bench.serve.bare`);
2. **service** -- ``rocketrank serve`` started as a separate process (uvicorn,
   httptools, uvloop) and driven by the open-loop generator
   (:mod:`bench.serve.loadgen`): ``runs`` runs of ``duration`` seconds at
   ``rate`` (medians reported), and with ``find_max`` a search for the highest
   rate whose p99 stays within the stage's SLO with zero errors;
3. **naive** -- :mod:`bench.serve.naive_server` on the same artifacts,
   feature tables and load.

Ratios come from this one invocation: ``server_time_ratio_vs_bare`` = the
service's median server-side time (``timing_ms.total``: body read, parse,
features, model, top-k, serialise) ÷ the bare model's median time;
``speedup_vs_naive`` = the service's max rate under the SLO ÷ the naive's
(``find_max``), or the naive's p50 ÷ the service's p50 at the same offered
rate (without ``find_max``); ``speedup_basis`` says which.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common.machine import machine_info
from bench.common.percentiles import median
from bench.common.processes import ServerProcess, free_port
from bench.serve.bare import load_stage_artifacts, measure_bare
from bench.serve.findmax import SLO_P99_MS, find_max_rate
from bench.serve.loadgen import build_request, run_load
from bench.serve.workload import Workload, build_workload
from models.contract.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[2]
SUSTAINED_P99_MS = 1000.0
"""*Sustained* throughput: the highest rate served with zero errors, ≥ 95 % of the
offered rate achieved and p99 under this bound -- the server keeps up, however
slowly. Compared when a server meets the SLO at no rate (the naive baseline; or
any server on a machine too noisy for a 10 ms p99)."""


@dataclass
class ServeBenchConfig:
    """Options of one ``rocketrank bench serve`` invocation (see ``serve_cli``)."""

    repo: Path
    features: Path
    out: Path
    redis: str | None = None
    stage: str = "coarse"
    candidates: int | None = None
    top_k: int | None = None
    coarse_top_k: int | None = None
    rate: float = 100.0
    duration: float = 10.0
    runs: int = 3
    warmup: float = 2.0
    find_max: bool = False
    start_rate: float = 100.0
    max_rate: float = 4000.0
    probe_duration: float | None = None
    max_probes: int = 10
    workers: int = 1
    torch_threads: int = 0
    requests: int = 32
    seed: int = 0
    coarse_model: str = "coarse"
    fine_model: str = "fine"
    naive: bool = True
    naive_start_rate: float = 8.0
    generator_check_rate: float | None = None
    slo_ms: float | None = None
    timeout: float = 2.0
    max_connections: int = 256
    bare_repeats: int = 20

    @property
    def slo(self) -> float:
        return self.slo_ms if self.slo_ms is not None else SLO_P99_MS[self.stage]

    @property
    def threads(self) -> int:
        """Torch intra-op threads per server worker, bare model and naive server alike.

        Default 1, the service's own default (``Settings.effective_torch_threads``): at
        these tensor sizes OpenMP barriers on shared cores cost more than they save.
        """
        return self.torch_threads or 1

    @property
    def roles(self) -> list[str]:
        return ["coarse", "fine"] if self.stage == "cascade" else [self.stage]


class BenchError(RuntimeError):
    """The benchmark cannot run (missing model, bad options); the message says why."""


# ----------------------------------------------------------------------------- helpers


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


def cpu_per_request(part: Mapping[str, Any] | None) -> float | None:
    """Server CPU ms per answered request: the runs' median, else (a server that could not
    sustain the benchmark rate) the highest passing sustained-throughput probe's."""
    if not part:
        return None
    value = part["median"].get("server_cpu_ms_per_request")
    if value is not None:
        return value
    probes = [p for p in (part.get("find_max_sustained") or {}).get("probes", []) if p["passed"]]
    return max(probes, key=lambda p: p["rate"])["server_cpu_ms_per_request"] if probes else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


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
    ) -> dict[str, Any]:
        """``cfg.runs`` runs at ``rate`` (default ``cfg.rate``), then optionally find-max."""
        cfg = self.cfg
        rate = rate or cfg.rate
        env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "ROCKETRANK_TORCH_THREADS": str(cfg.threads),
        }
        payloads = [build_request("127.0.0.1", port, "/v1/rank", b) for b in self.workload.bodies]
        with ServerProcess(cmd, port, env=env, cwd=ROOT) as server:

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
                sustained = find_max_rate(
                    lambda r: load(r, probe_s, 1.0),
                    SUSTAINED_P99_MS,
                    start_rate=start_rate,
                    max_rate=cfg.max_rate,
                    min_rate=0.5,
                    max_probes=cfg.max_probes,
                )
                result["find_max_sustained"] = sustained.to_dict()
                result["find_max_sustained"]["slo_p99_ms"] = SUSTAINED_P99_MS
        return result


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.2f}"


def service_command(cfg: ServeBenchConfig, port: int, models: Mapping[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "rocketrank", "serve", "--repo", str(cfg.repo)]
    cmd += ["--redis", cfg.redis] if cfg.redis else ["--features", str(cfg.features)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(cfg.workers)]
    cmd += ["--coarse-model", models.get("coarse", ""), "--fine-model", models.get("fine", "")]
    cmd += ["--log-level", "WARNING"]
    return cmd


def naive_command(cfg: ServeBenchConfig, port: int, models: Mapping[str, str]) -> list[str]:
    threads = cfg.threads
    cmd = [sys.executable, "-m", "bench.serve.naive_server", "--repo", str(cfg.repo)]
    cmd += ["--features", str(cfg.features), "--port", str(port), "--threads", str(threads)]
    cmd += ["--coarse-model", models.get("coarse", ""), "--fine-model", models.get("fine", "")]
    return cmd


# ----------------------------------------------------------------------------- the benchmark


def run_serve_bench(
    cfg: ServeBenchConfig, log: Callable[[str], None] = print, command: str = ""
) -> dict[str, Any]:
    """Run bare, service and (optionally) naive measurements; returns the JSON document.

    Args:
        cfg: the options.
        log: progress lines go here.
        command: the command line, recorded in the JSON.

    Raises:
        BenchError: the repository lacks a model the stage needs, or bad options.
    """
    if cfg.stage not in SLO_P99_MS:
        raise BenchError(f"stage must be one of {list(SLO_P99_MS)}, got {cfg.stage!r}")
    if cfg.runs < 1 or cfg.duration <= 0 or cfg.rate <= 0:
        raise BenchError("runs >= 1, duration > 0 and rate > 0 are required")
    started = time.time()
    machine = machine_info()
    repository = ModelRepository(cfg.repo)
    present = set(repository.names()) if cfg.repo.is_dir() else set()
    wanted = {"coarse": cfg.coarse_model, "fine": cfg.fine_model}
    for role in cfg.roles:
        if wanted[role] not in present:
            raise BenchError(
                f"stage {cfg.stage!r} needs a {role} model named {wanted[role]!r} in {cfg.repo}; "
                f"found {sorted(present) or 'none'}"
            )
    # Serve every configured model that exists (as production would), score with the needed ones.
    served = {role: name for role, name in wanted.items() if name in present}
    artifacts = load_stage_artifacts(cfg.repo, {r: served[r] for r in cfg.roles})
    context = sorted(
        {n for a in artifacts.values() for n in a.manifest.features.get("context", [])}
    )
    workload = build_workload(
        cfg.features,
        cfg.stage,
        candidates=cfg.candidates,
        top_k=cfg.top_k,
        coarse_top_k=cfg.coarse_top_k,
        context_features=context,
        n_requests=cfg.requests,
        seed=cfg.seed,
    )
    calls = workload.calls
    log(
        f"{cfg.stage}: {len(calls[0].candidates)} candidates, {len(calls)} distinct bodies of "
        f"~{workload.mean_body_bytes / 1024:.0f} KiB; models "
        + ", ".join(f"{r}={a.manifest.name}@{a.manifest.version}" for r, a in artifacts.items())
    )

    threads = cfg.threads
    log(f"bare model in-process ({threads} torch threads) ...")
    bare = measure_bare(artifacts, cfg.features, calls, threads=threads, repeats=cfg.bare_repeats)
    log(f"  bare p50 {bare['p50_ms']:.3f} ms")

    bench = ServerBench(cfg, workload, log)
    port = free_port()
    log(f"service on :{port} ...")
    service = bench.measure(
        "service",
        service_command(cfg, port, served),
        port,
        find_max=cfg.find_max,
        start_rate=cfg.start_rate,
    )
    naive: dict[str, Any] | None = None
    if cfg.naive:
        port = free_port()
        log(f"naive baseline on :{port} ...")
        naive = bench.measure(
            "naive",
            naive_command(cfg, port, served),
            port,
            find_max=cfg.find_max,
            start_rate=cfg.naive_start_rate,
        )

    generator: dict[str, Any] | None = None
    if cfg.generator_check_rate:
        port = free_port()
        log(f"load-generator check against a null server on :{port} ...")
        null_cmd = [sys.executable, "-m", "bench.serve.null_server", "--port", str(port)]
        generator = bench.measure(
            "null",
            null_cmd,
            port,
            find_max=False,
            start_rate=cfg.generator_check_rate,
            rate=cfg.generator_check_rate,
        )

    med = service["median"]
    speedup, basis = None, "naive baseline not run"
    if naive is not None:
        if cfg.find_max:
            svc_max = service["find_max"]["max_rate"]
            naive_max = naive["find_max"]["max_rate"]
            if svc_max > 0 and naive_max > 0:
                speedup = _ratio(svc_max, naive_max)
                basis = f"max rate with p99 <= {cfg.slo:g} ms and 0 errors: service / naive"
            else:
                speedup = _ratio(
                    service["find_max_sustained"]["max_rate"],
                    naive["find_max_sustained"]["max_rate"],
                )
                who = (
                    "both servers"
                    if svc_max == naive_max == 0
                    else ("the naive server" if naive_max == 0 else "the service")
                )
                basis = (
                    f"{who} missed p99 <= {cfg.slo:g} ms at every rate tried; sustained "
                    f"throughput (0 errors, p99 <= {SUSTAINED_P99_MS:g} ms): service / naive"
                )
        elif naive["median"]["errors"]:
            basis = (
                f"naive server could not sustain {cfg.rate:g} req/s ({naive['median']['errors']} "
                f"errors over {cfg.runs} runs): no p50 at equal load; use --find-max"
            )
        else:
            speedup = _ratio(naive["median"]["p50_ms"], med["p50_ms"])
            basis = f"p50 latency at {cfg.rate:g} req/s: naive / service (find-max off)"

    doc: dict[str, Any] = {
        "benchmark": "serve",
        "machine": machine,
        "command": command,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "stage": cfg.stage,
        "candidates": len(calls[0].candidates),
        "body_bytes_mean": workload.mean_body_bytes,
        "slo_p99_ms": cfg.slo,
        "rate": cfg.rate,
        "qps": med["qps"],
        "errors": med["errors"],
        "p50_ms": med["p50_ms"],
        "p95_ms": med["p95_ms"],
        "p99_ms": med["p99_ms"],
        "p999_ms": med["p999_ms"],
        "meets_slo_at_rate": med["errors"] == 0
        and med["p99_ms"] is not None
        and med["p99_ms"] <= cfg.slo,
        "server_time_p50_ms": med["server_time_p50_ms"],
        "server_cpu_ms_per_request": cpu_per_request(service),
        "naive_server_cpu_ms_per_request": cpu_per_request(naive),
        "bare_p50_ms": bare["p50_ms"],
        "server_time_ratio_vs_bare": _ratio(med["server_time_p50_ms"], bare["p50_ms"]),
        "speedup_vs_naive": speedup,
        "speedup_basis": basis,
        "max_qps_under_slo": service["find_max"]["max_rate"] if cfg.find_max else None,
        "sustained_qps": service["find_max_sustained"]["max_rate"] if cfg.find_max else None,
        "naive_max_qps_under_slo": naive["find_max"]["max_rate"]
        if cfg.find_max and naive
        else None,
        "naive_sustained_qps": naive["find_max_sustained"]["max_rate"]
        if cfg.find_max and naive
        else None,
        "bare": bare,
        "service": service,
        "naive": naive,
        "generator_check": generator,
        "seconds": round(time.time() - started, 1),
    }
    return doc


__all__ = [
    "BenchError",
    "ServeBenchConfig",
    "group_cpu_seconds",
    "median_summary",
    "run_serve_bench",
    "wait_idle",
]
