"""Soak benchmark: the real service under a steady open-loop load for minutes.

Starts ``rocketrank serve`` in its own process group, offers ``--rate``
requests/s (or ``--load-fraction`` of ``--max-rate``: 70 % by default) of
realistic rank bodies for ``--duration`` seconds, and samples the resident
memory (RSS, from ``/proc``) of every process of the server's group once a
second. It passes when no request failed (no error status, no timeout, no
connection error) and the RSS grew by less than ``--max-rss-growth`` (10 %)
from the start to the end of the measured run.

RSS growth compares the median of the samples of the first and of the last
``--rss-window`` seconds (10 s) of the measured run, after a warm-up at the
same rate, so allocator noise and one-off warm-up allocations (the first
request of each shape, torch's caches) are not counted as a leak.

Usage::

    python -m bench.serve.soak --repo REPO --features DATA --duration 120 \\
        --rate 100 --out soak.json
    python -m bench.serve.soak --repo REPO --features DATA --max-rate 250 --out soak.json

Exit code 0 when the soak passed, 1 when it failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common.percentiles import summarise
from bench.common.processes import ServerProcess, free_port
from bench.serve.loadgen import RunResult, build_request, run_load
from bench.serve.workload import STAGE_DEFAULTS, WorkloadError, build_workload

_PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process in process group ``pgid`` (bytes)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue  # the process exited between listdir and open
        # comm (field 2) may hold spaces: the fields after it start past the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            total += int(fields[21]) * _PAGE  # field 24: rss in pages
    return total


class RssSampler:
    """Samples :func:`group_rss_bytes` every ``interval_s`` in a background thread."""

    def __init__(self, pgid: int, interval_s: float = 1.0) -> None:
        self.pgid = pgid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - start, group_rss_bytes(self.pgid)))
            if self._stop.wait(self.interval_s):
                return


def rss_growth(samples: Sequence[tuple[float, int]], window_s: float) -> dict[str, Any]:
    """Median RSS of the first and last ``window_s`` seconds and the relative growth."""
    if not samples:
        raise ValueError("no RSS samples")
    end = samples[-1][0]
    first = [rss for t, rss in samples if t <= window_s] or [samples[0][1]]
    last = [rss for t, rss in samples if t >= end - window_s] or [samples[-1][1]]
    start_rss, end_rss = statistics.median(first), statistics.median(last)
    return {
        "start_bytes": int(start_rss),
        "end_bytes": int(end_rss),
        "max_bytes": max(rss for _, rss in samples),
        "growth": (end_rss - start_rss) / start_rss if start_rss else float("inf"),
    }


def windows(result: RunResult, window_s: float) -> list[dict[str, Any]]:
    """Per-window request counts, errors and latency percentiles (by due time)."""
    out = []
    n = max(1, int(result.duration_s // window_s))
    for w in range(n):
        lo, hi = result.start + w * window_s, result.start + (w + 1) * window_s
        idx = [i for i, d in enumerate(result.due) if lo <= d < hi]
        ok = [i for i in idx if result.error[i] is None]
        lat = [(result.done[i] - min(result.due[i], result.sent[i])) * 1e3 for i in ok]
        stats = summarise(lat)
        out.append(
            {
                "window": w,
                "requests": len(idx),
                "errors": len(idx) - len(ok),
                "p50_ms": stats["p50_ms"],
                "p99_ms": stats["p99_ms"],
            }
        )
    return out


def server_status_codes(base: str) -> dict[str, float]:
    """``rocketrank_requests_total`` summed by status code, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    codes: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rocketrank_requests_total":
                codes[s.labels["code"]] += s.value
    return dict(sorted(codes.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, type=Path, help="model repository")
    parser.add_argument("--features", required=True, type=Path, help="users/items.parquet dir")
    parser.add_argument("--out", required=True, type=Path, help="JSON result file")
    parser.add_argument("--stage", default="cascade", choices=sorted(STAGE_DEFAULTS))
    parser.add_argument("--candidates", type=int, default=None, help="per request")
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--rate", type=float, help="offered requests/s")
    rate.add_argument("--max-rate", type=float, help="the benchmark's max rate (requests/s)")
    parser.add_argument(
        "--load-fraction", type=float, default=0.7, help="of --max-rate (default 0.7)"
    )
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds, not measured")
    parser.add_argument("--rss-window", type=float, default=10.0, help="seconds (see module doc)")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (s)")
    parser.add_argument("--requests", type=int, default=64, help="distinct request bodies")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--context", nargs="*", default=["hour", "device"],
                        help="context features filled from the log split")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    rate = args.rate if args.rate is not None else args.max_rate * args.load_fraction
    if rate <= 0 or args.duration <= 0 or args.warmup < 0 or not 0 < args.load_fraction <= 1:
        print("soak: need rate > 0, duration > 0, warmup >= 0, 0 < load-fraction <= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        workload = build_workload(
            args.features, args.stage, candidates=args.candidates,
            context_features=args.context, n_requests=args.requests,
        )  # fmt: skip
    except WorkloadError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    port = free_port()
    cmd = [sys.executable, "-m", "rocketrank", "serve", "--repo", str(args.repo)]
    cmd += ["--features", str(args.features), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--log-level", "WARNING"]
    payloads = [build_request("127.0.0.1", port, "/v1/rank", b) for b in workload.bodies]
    print(f"soak: {args.stage}, {len(workload.calls[0].candidates)} candidates, "
          f"{rate:.1f} req/s for {args.duration:g} s (+{args.warmup:g} s warm-up)")  # fmt: skip
    started = time.time()
    with ServerProcess(cmd, port) as server:
        assert server.proc is not None
        pgid = server.proc.pid  # its own session: pid == pgid
        if args.warmup > 0:
            run_load("127.0.0.1", port, payloads, rate, args.warmup, timeout_s=args.timeout)
        with RssSampler(pgid) as sampler:
            result = run_load("127.0.0.1", port, payloads, rate, args.duration,
                              timeout_s=args.timeout)  # fmt: skip
        codes = server_status_codes(f"http://127.0.0.1:{port}")
        log_tail = server.log_tail(20)
    summary = result.summary()
    memory = rss_growth(sampler.samples, args.rss_window)
    passed = summary["errors"] == 0 and memory["growth"] < args.max_rss_growth
    document = {
        "command": " ".join(sys.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "load_average_at_start": os.getloadavg(),
        "stage": args.stage,
        "candidates": len(workload.calls[0].candidates),
        "offered_rate": rate,
        "max_rate": args.max_rate,
        "duration_s": args.duration,
        "summary": summary,
        "server_status_codes": codes,
        "windows": windows(result, 10.0),
        "rss": memory,
        "rss_samples": [{"t": round(t, 2), "bytes": b} for t, b in sampler.samples],
        "criteria": {"errors": 0, "max_rss_growth": args.max_rss_growth},
        "passed": passed,
        "server_log_tail": log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    verdict = "PASS" if passed else "FAIL"
    mib = 2**20
    print(
        f"soak: {summary['ok']}/{summary['requests']} ok, {summary['errors']} errors "
        f"{summary['error_kinds']}, p50 {summary['p50_ms']:.2f} ms, "
        f"p99 {summary['p99_ms']:.2f} ms, RSS {memory['start_bytes'] / mib:.1f} -> "
        f"{memory['end_bytes'] / mib:.1f} MiB ({memory['growth']:+.1%}): {verdict}; "
        f"written to {args.out}"
    )
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve.soak", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
