"""``rocketrank bench serve``: benchmark the HTTP scoring service.

Example (the design's coarse goal, with the max-throughput search)::

    rocketrank bench serve --repo models/ --features data/ --stage coarse \\
        --rate 100 --duration 10 --runs 3 --find-max --out bench/coarse.json

Prints a short table and writes the JSON document described in
``bench.serve.run`` (keys ``qps, errors, p50_ms, p95_ms, p99_ms,
p999_ms, server_time_ratio_vs_bare, speedup_vs_naive`` and the details).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.common.processes import ServerStartError
from bench.common.report import median_steps
from bench.serve.config import MIN_CATALOGUE_ITEMS, NAIVE_RATE
from bench.serve.findmax import SLO_P99_MS
from bench.serve.loadgen import LoadGenError
from bench.serve.run import BenchError, ServeBenchConfig, run_serve_bench
from bench.serve.workload import WorkloadError
from models.contract.manifest import ArtifactError
from models.contract.repository_reader import RepositoryError


# Long (~85 lines): one add_argument per option, in the order --help lists them.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, required=True, help="model repository")
    parser.add_argument(
        "--features",
        type=Path,
        required=True,
        help="folder with users.parquet and items.parquet: the source of request ids, the "
        "bare model's and the naive server's features, and the service's store unless --redis",
    )
    parser.add_argument("--redis", help="serve features from this Redis URL instead")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--stage", choices=sorted(SLO_P99_MS), default="coarse", help="stage to load (coarse)"
    )
    parser.add_argument(
        "--candidates", type=int, help="per request (coarse/cascade 10000, fine 500)"
    )
    parser.add_argument("--top-k", type=int, help="items returned (default 50)")
    parser.add_argument("--coarse-top-k", type=int, help="cascade survivors (default 500)")
    parser.add_argument("--rate", type=float, default=100.0, help="offered requests/s (100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs at --rate; medians reported")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--find-max", action="store_true", help="search the highest rate with p99 within the SLO"
    )
    parser.add_argument("--start-rate", type=float, default=100.0, help="find-max start (100)")
    parser.add_argument("--max-rate", type=float, default=4000.0, help="find-max bound (4000)")
    parser.add_argument("--probe-duration", type=float, help="seconds per find-max probe")
    parser.add_argument("--max-probes", type=int, default=10, help="find-max runs per server")
    parser.add_argument("--slo-ms", type=float, help="p99 bound (default: the stage's SLO)")
    parser.add_argument("--workers", type=int, default=1, help="service worker processes (1)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch threads per server worker, for the naive server and the bare model "
        "(ROCKETRANK_TORCH_THREADS; default 0 = 1, the service's default)",
    )
    parser.add_argument("--requests", type=int, default=32, help="distinct request bodies (32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request workload")
    parser.add_argument("--coarse-model", default="coarse", help="coarse model name (coarse)")
    parser.add_argument("--fine-model", default="fine", help="fine model name (fine)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--naive-start-rate", type=float, default=8.0, help="find-max start for the naive (8)"
    )
    parser.add_argument(
        "--naive-rate",
        type=float,
        default=NAIVE_RATE,
        help=f"offered rate of the naive baseline's fixed runs ({NAIVE_RATE:g}; it cannot "
        "sustain the service's rate)",
    )
    parser.add_argument(
        "--body",
        choices=["json", "binary", "both"],
        default="json",
        help="request bodies for the service: JSON, the binary tensor encoding "
        "(docs/SERVICE.md, binary answers too), or both against the same server (json)",
    )
    parser.add_argument(
        "--min-catalogue",
        type=int,
        default=MIN_CATALOGUE_ITEMS,
        help=f"refuse item tables smaller than this ({MIN_CATALOGUE_ITEMS:,})",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        help="p99-versus-offered-rate PNG of the --find-max probes (default: --out with .png)",
    )
    parser.add_argument(
        "--generator-check",
        type=float,
        metavar="RATE",
        help="also drive a null server at RATE req/s with the same bodies (the harness's floor)",
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="request timeout, s (2)")
    parser.add_argument(
        "--max-connections", type=int, default=256, help="load generator's connection pool (256)"
    )
    parser.add_argument(
        "--bare-repeats", type=int, default=20, help="repeats of the bare-model timing (20)"
    )


def config_from_args(args: argparse.Namespace) -> ServeBenchConfig:
    return ServeBenchConfig(
        repo=args.repo,
        features=args.features,
        out=args.out,
        redis=args.redis,
        stage=args.stage,
        candidates=args.candidates,
        top_k=args.top_k,
        coarse_top_k=args.coarse_top_k,
        rate=args.rate,
        duration=args.duration,
        runs=args.runs,
        warmup=args.warmup,
        find_max=args.find_max,
        start_rate=args.start_rate,
        max_rate=args.max_rate,
        probe_duration=args.probe_duration,
        max_probes=args.max_probes,
        workers=args.workers,
        torch_threads=args.torch_threads,
        requests=args.requests,
        seed=args.seed,
        coarse_model=args.coarse_model,
        fine_model=args.fine_model,
        naive=not args.no_naive,
        naive_start_rate=args.naive_start_rate,
        naive_rate=args.naive_rate,
        bodies=("json", "binary") if args.body == "both" else (args.body,),
        min_catalogue=args.min_catalogue,
        chart=args.chart,
        generator_check_rate=args.generator_check,
        slo_ms=args.slo_ms,
        timeout=args.timeout,
        max_connections=args.max_connections,
        bare_repeats=args.bare_repeats,
    )


def _cell(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(doc: dict[str, Any]) -> str:
    """A short fixed-width table of the JSON document."""
    head = f"{'':8} {'qps':>8} {'errors':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'p99.9':>8}"
    head += f" {'server p50':>10} {'max qps':>8} {'CPU/req':>8}"
    lines = [
        f"bench serve  stage={doc['stage']}  candidates={doc['candidates']}  rate={doc['rate']:g}/s"
        f"  SLO p99 <= {doc['slo_p99_ms']:g} ms  ({doc['machine']['cpu_model']}, "
        f"{doc['machine']['cores']} cores, torch {doc['machine']['torch']})",
        head + "   (ms)",
    ]
    parts = [(f"svc/{body}", part) for body, part in (doc.get("service_by_body") or {}).items()]
    parts = parts or [("service", doc.get("service"))]
    parts += [("naive", doc.get("naive")), ("null srv", doc.get("generator_check"))]
    for label, part in parts:
        if not part:
            continue
        m = part["median"]
        fm = part.get("find_max")
        lines.append(
            f"{label:8} {_cell(m['qps'], 1):>8} {m['errors']:>6} {_cell(m['p50_ms']):>8} "
            f"{_cell(m['p95_ms']):>8} {_cell(m['p99_ms']):>8} {_cell(m['p999_ms']):>8} "
            f"{_cell(m['server_time_p50_ms'], 3):>10} {_cell(fm['max_rate'] if fm else None, 1):>8}"
            f" {_cell(m.get('server_cpu_ms_per_request')):>8}"
        )
    lines.append(f"{'bare':8} {'':>8} {'':>6} {_cell(doc['bare']['p50_ms'], 3):>8}")
    steps = median_steps(doc["service"]["runs"])
    if steps:
        lines.append(
            "service steps (median over runs of p50, ms): "
            + ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
        )
    lines.append(
        f"server_time_ratio_vs_bare {_cell(doc['server_time_ratio_vs_bare'])}   "
        f"speedup_vs_naive {_cell(doc['speedup_vs_naive'], 1)} ({doc['speedup_basis']})"
    )
    for body, head in (doc.get("bodies") or {}).items():
        lines.append(
            f"{body}: {head['body_bytes_mean'] / 1024:.0f} KiB bodies, server/bare "
            f"{_cell(head['server_time_ratio_vs_bare'])}, max qps under SLO "
            f"{_cell(head['max_qps_under_slo'], 1)}, speedup_vs_naive "
            f"{_cell(head['speedup_vs_naive'], 1)}"
        )
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds the stack, so the servers under test are stopped too.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    cfg = config_from_args(args)
    argv = sys.argv[1:]
    if argv[:2] == ["bench", "serve"]:
        argv = argv[2:]
    command = "rocketrank bench serve " + shlex.join(argv)
    try:
        doc = run_serve_bench(cfg, log=lambda line: print(line, flush=True), command=command)
    except (
        BenchError,
        WorkloadError,
        ArtifactError,
        RepositoryError,
        ServerStartError,
        LoadGenError,
    ) as exc:
        print(f"rocketrank bench serve: {exc}", file=sys.stderr)
        return 2
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(format_table(doc))
    print(f"wrote {cfg.out}")
    return 0
