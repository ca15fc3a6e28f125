"""CPU time per request of the service's ``/v1/rank``, in-process, per body format.

No sockets, no uvicorn: the benchmark's bodies are handed straight to the ASGI app
(``service.app.create_app``, lifespan run by Starlette's TestClient) on an event loop
of this process, one request at a time, and ``time.process_time`` (CPU of every
thread of the process: the event loop and the ranking thread) is read around each
batch. CPU time is far less sensitive to noisy neighbours than latency, so this
separates what a body format costs the service from what the machine's load does
to the HTTP figures. Formats alternate batch by batch (``json``, ``binary``,
``json``, ...) so slow drifts hit both alike.

Run: ``python -m bench.serve.inprocess --repo REPO --features DATA --stage coarse``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from bench.serve.workload import BODY_FORMATS, Workload, build_workload
from service.api import binary
from service.api.parsing import parse_rank_request
from service.app import create_app
from service.settings import Settings


def _scope(headers: dict[str, str], length: int) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": "/v1/rank", "raw_path": b"/v1/rank",
            "query_string": b"", "headers": raw, "http_version": "1.1", "scheme": "http",
            "server": ("127.0.0.1", 0), "client": ("127.0.0.1", 1), "root_path": ""}  # fmt: skip


async def _call(app: Any, body: bytes, headers: dict[str, str]) -> int:
    """One request through the ASGI app; returns the status."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a connected client that sends nothing more
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(headers or {"Content-Type": "application/json"}, len(body)), receive, send)
    return status


def cpu_per_request(
    app: Any, workloads: dict[str, Workload], requests: int, rounds: int
) -> dict[str, list[float]]:
    """``{body format: [CPU ms per request of each round]}`` (formats alternate)."""
    out: dict[str, list[float]] = {name: [] for name in workloads}

    async def batch(w: Workload) -> float:
        n = len(w.bodies)
        cpu = time.process_time()
        for i in range(requests):
            status = await _call(app, w.bodies[i % n], w.headers[i % n])
            if status != 200:
                raise RuntimeError(f"/v1/rank answered {status}")
        return (time.process_time() - cpu) * 1e3 / requests

    async def main() -> None:
        for w in workloads.values():  # warm-up: caches, first-call paths
            await batch(w)
        for _ in range(rounds):
            for name, w in workloads.items():
                out[name].append(await batch(w))

    asyncio.run(main())
    return out


def parse_cpu_per_request(
    settings: Settings, workloads: dict[str, Workload], requests: int, rounds: int
) -> dict[str, list[float]]:
    """``{body format: [CPU ms of parsing one body, per round]}``: the body → query step
    alone (``parse_rank_request`` for JSON, ``BinaryExchange.parse`` for binary)."""
    out: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(rounds):
        for name, w in workloads.items():
            n = len(w.bodies)
            exchanges = [binary.negotiate([(k.lower().encode(), v.encode()) for k, v in h.items()])
                         for h in w.headers]  # fmt: skip
            cpu = time.process_time()
            for i in range(requests):
                exchange = exchanges[i % n]
                if exchange is None:
                    parse_rank_request(w.bodies[i % n], settings)
                else:
                    exchange.parse(w.bodies[i % n], settings)
            out[name].append((time.process_time() - cpu) * 1e3 / requests)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--stage", default="coarse", choices=["coarse", "fine", "cascade"])
    parser.add_argument("--candidates", type=int)
    parser.add_argument("--requests", type=int, default=300, help="per round and format")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="load artifacts without a signature"
    )
    parser.add_argument(
        "--parse-only", action="store_true", help="time only the body -> query parsing step"
    )
    args = parser.parse_args(argv)
    settings = Settings(
        repo=args.repo,
        features_dir=args.features,
        fine_model="" if args.stage == "coarse" else "fine",
        coarse_model="" if args.stage == "fine" else "coarse",
        reload_interval_s=0,
        item_refresh_s=0,
        allow_unsigned_artifacts=args.allow_unsigned,
    )
    base = build_workload(args.features, args.stage, candidates=args.candidates, n_requests=32)
    workloads = {name: base.with_body(name) for name in BODY_FORMATS}
    if args.parse_only:
        result = parse_cpu_per_request(settings, workloads, args.requests, args.rounds)
    else:
        app = create_app(settings)
        with TestClient(app):  # runs the lifespan (models loaded and warmed) in its own thread
            result = cpu_per_request(app, workloads, args.requests, args.rounds)
    doc = {
        "stage": args.stage,
        "measured": "parse step" if args.parse_only else "whole request (ASGI, in-process)",
        "requests_per_round": args.requests,
        "cpu_ms_per_request": result,
        "median": {k: statistics.median(v) for k, v in result.items()},
    }
    for name, med in doc["median"].items():
        rounds = ", ".join(f"{v:.3f}" for v in result[name])
        print(f"{name:7} CPU ms/request: median {med:.3f} (rounds: {rounds})")
    if args.out:
        args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
