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

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common.machine import machine_info
from bench.common.processes import free_port
from bench.serve.bare import load_stage_artifacts, measure_bare
from bench.serve.chart import write_rate_chart
from bench.serve.config import SUSTAINED_P99_MS, BenchError, ServeBenchConfig
from bench.serve.findmax import SLO_P99_MS
from bench.serve.server_bench import ServerBench, group_cpu_seconds, median_summary, wait_idle
from bench.serve.workload import Workload, build_workload
from models.contract.repository import ModelRepository


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


def _check_options(cfg: ServeBenchConfig) -> None:
    if cfg.stage not in SLO_P99_MS:
        raise BenchError(f"stage must be one of {list(SLO_P99_MS)}, got {cfg.stage!r}")
    if cfg.runs < 1 or cfg.duration <= 0 or cfg.rate <= 0:
        raise BenchError("runs >= 1, duration > 0 and rate > 0 are required")


def _served_models(cfg: ServeBenchConfig) -> dict[str, str]:
    """Role -> model name of every configured model the repository holds.

    Raises:
        BenchError: a model the stage needs is missing.
    """
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
    return {role: name for role, name in wanted.items() if name in present}


def _workload(cfg: ServeBenchConfig, artifacts: Mapping[str, Any]) -> Workload:
    """The JSON workload (the other body formats are the same calls re-serialised).

    Raises:
        BenchError: the item table is smaller than ``cfg.min_catalogue``.
    """
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
    if workload.catalogue_items < cfg.min_catalogue:
        raise BenchError(
            f"{cfg.features}/items.parquet holds {workload.catalogue_items:,} items, fewer than "
            f"--min-catalogue {cfg.min_catalogue:,}: candidates would be most of the table "
            "(make a larger one, e.g. rocketrank synth --items 120000)"
        )
    return workload


def _measure_servers(
    cfg: ServeBenchConfig,
    workload: Workload,
    served: Mapping[str, str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """``({body format: service measurement}, naive or None, null-server check or None)``.

    The naive baseline gets JSON bodies (the tutorial API) at its own ``naive_rate``.
    """
    bench = ServerBench(cfg, workload, log)
    port = free_port()
    log(f"service on :{port} ...")
    service = bench.measure_bodies(
        "service",
        service_command(cfg, port, served),
        port,
        [workload.with_body(b) for b in cfg.bodies],
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
            rate=cfg.naive_rate,
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
    return service, naive, generator


def _speedup(
    cfg: ServeBenchConfig, service: Mapping[str, Any], naive: Mapping[str, Any] | None
) -> tuple[float | None, str]:
    """``(speedup_vs_naive, speedup_basis)``: see the module docstring."""
    if naive is None:
        return None, "naive baseline not run"
    if cfg.find_max:
        svc_max = service["find_max"]["max_rate"]
        naive_max = naive["find_max"]["max_rate"]
        if svc_max > 0 and naive_max > 0:
            basis = f"max rate with p99 <= {cfg.slo:g} ms and 0 errors: service / naive"
            return _ratio(svc_max, naive_max), basis
        who = (
            "both servers"
            if svc_max == naive_max == 0
            else ("the naive server" if naive_max == 0 else "the service")
        )
        basis = (
            f"{who} missed p99 <= {cfg.slo:g} ms at every rate tried; sustained "
            f"throughput (0 errors, p99 <= {SUSTAINED_P99_MS:g} ms): service / naive"
        )
        speedup = _ratio(
            service["find_max_sustained"]["max_rate"], naive["find_max_sustained"]["max_rate"]
        )
        return speedup, basis
    if naive["median"]["errors"]:
        basis = (
            f"naive server could not sustain {cfg.naive_rate:g} req/s "
            f"({naive['median']['errors']} errors over {cfg.runs} runs); use --find-max"
        )
        return None, basis
    basis = (
        f"server-side time p50 per request, naive (at {cfg.naive_rate:g} req/s) / service "
        f"(at {cfg.rate:g} req/s) (find-max off)"
    )
    return _ratio(
        naive["median"]["server_time_p50_ms"], service["median"]["server_time_p50_ms"]
    ), basis


def _max_rate(part: Mapping[str, Any] | None, key: str) -> float | None:
    return part[key]["max_rate"] if part and key in part else None


def _headline(
    cfg: ServeBenchConfig,
    service: Mapping[str, Any],
    naive: Mapping[str, Any] | None,
    bare: Mapping[str, Any],
) -> dict[str, Any]:
    """The document's top-level figures (medians over runs, ratios, max rates)."""
    med = service["median"]
    speedup, basis = _speedup(cfg, service, naive)
    find_max = cfg.find_max
    return {
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
        "max_qps_under_slo": _max_rate(service, "find_max") if find_max else None,
        "sustained_qps": _max_rate(service, "find_max_sustained") if find_max else None,
        "naive_max_qps_under_slo": _max_rate(naive, "find_max") if find_max else None,
        "naive_sustained_qps": _max_rate(naive, "find_max_sustained") if find_max else None,
    }


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
    _check_options(cfg)
    started = time.time()
    machine = machine_info()
    served = _served_models(cfg)
    artifacts = load_stage_artifacts(cfg.repo, {r: served[r] for r in cfg.roles})
    workload = _workload(cfg, artifacts)
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
    by_body, naive, generator = _measure_servers(cfg, workload, served, log)
    service = by_body[cfg.bodies[0]]
    doc = {
        "benchmark": "serve",
        "machine": machine,
        "command": command,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "stage": cfg.stage,
        "candidates": len(calls[0].candidates),
        "catalogue_items": workload.catalogue_items,
        "body": cfg.bodies[0],
        "body_bytes_mean": workload.with_body(cfg.bodies[0]).mean_body_bytes,
        "slo_p99_ms": cfg.slo,
        **_headline(cfg, service, naive, bare),
        "bodies": {
            body: {
                "body_bytes_mean": workload.with_body(body).mean_body_bytes,
                **_headline(cfg, part, naive, bare),
            }
            for body, part in by_body.items()
        },
        "bare": bare,
        "service": service,
        "service_by_body": by_body,
        "naive": naive,
        "generator_check": generator,
        "seconds": round(time.time() - started, 1),
    }
    if cfg.find_max:
        chart = cfg.chart or cfg.out.with_suffix(".png")
        write_rate_chart(doc, chart)
        doc["chart"] = str(chart)
        log(f"wrote {chart}")
    return doc


__all__ = [
    "BenchError",
    "ServeBenchConfig",
    "ServerBench",
    "group_cpu_seconds",
    "median_summary",
    "run_serve_bench",
    "wait_idle",
]
