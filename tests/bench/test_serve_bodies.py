"""`rocketrank bench serve` additions: binary bodies in the load generator, the
catalogue check, the naive baseline's own rate, the speed-up basis and the
p99-versus-rate chart. Logic only, never timing."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from bench.serve.chart import rate_series, write_rate_chart
from bench.serve.command import add_arguments, config_from_args
from bench.serve.config import NAIVE_RATE, ServeBenchConfig
from bench.serve.http_wire import build_request, server_timing
from bench.serve.inprocess import cpu_per_request, parse_cpu_per_request
from bench.serve.run import BenchError, _speedup, run_serve_bench
from bench.serve.workload import WorkloadError, build_workload
from service.api import binary
from service.api.parsing import parse_rank_request
from service.app import create_app
from service.settings import Settings
from tests.helpers import service as sf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return sf.make_repo(tmp_path_factory.mktemp("bench-bodies"))


def test_binary_bodies_parse_to_the_same_query_as_the_json_bodies(tiny):
    json_w = build_workload(tiny["data"], "cascade", candidates=120, seed=4, n_requests=3)
    binary_w = json_w.with_body("binary")
    assert binary_w.calls is json_w.calls and binary_w.catalogue_items == sf.N_ITEMS
    settings = Settings(repo=tiny["repo"], features_dir=tiny["data"])
    for jb, bb, headers in zip(json_w.bodies, binary_w.bodies, binary_w.headers):
        assert len(bb) < len(jb)
        _, from_json = parse_rank_request(jb, settings)
        exchange = binary.negotiate([(k.lower().encode(), v.encode()) for k, v in headers.items()])
        assert exchange is not None and exchange.binary_request
        _, from_binary = exchange.parse(bb, settings)
        assert exchange.binary_response  # the benchmark asks for binary answers
        np.testing.assert_array_equal(from_binary.candidate_ids, from_json.candidate_ids)
        assert from_binary == from_json.__class__(
            **{**from_json.__dict__, "candidate_ids": from_binary.candidate_ids}
        )
    with pytest.raises(WorkloadError, match="body format"):
        json_w.with_body("protobuf")


def test_build_request_sends_the_binary_headers():
    raw = build_request("h", 1, "/v1/rank", b"xyz", {"Content-Type": binary.MEDIA_TYPE, "X-A": "1"})
    head, body = raw.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/rank HTTP/1.1" and body == b"xyz"
    assert f"Content-Type: {binary.MEDIA_TYPE}".encode() in lines and b"X-A: 1" in lines
    assert b"Content-Type: application/json" not in lines and b"Content-Length: 3" in lines


def test_server_timing_reads_a_binary_answers_json_header():
    header = orjson.dumps({"parameters": {"timing_ms": {"parse": 0.01, "total": 1.5}}})
    body = header + b"\x00" * 16
    length = {b"inference-header-content-length": str(len(header)).encode()}
    assert server_timing(length, body) == (1.5, {"parse": 0.01, "total": 1.5})
    assert server_timing({b"inference-header-content-length": b"3"}, body) == (None, {})


def test_a_small_catalogue_is_refused_unless_allowed(tiny, tmp_path):
    cfg = ServeBenchConfig(repo=tiny["repo"], features=tiny["data"], out=tmp_path / "x.json")
    with pytest.raises(BenchError, match="300 items, fewer than --min-catalogue 100,000"):
        run_serve_bench(cfg, log=lambda _: None)


def test_command_line_options_of_the_additions():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--repo", "r", "--features", "f", "--out", "o.json"]
    cfg = config_from_args(parser.parse_args([*base, "--body", "both"]))
    assert cfg.bodies == ("json", "binary") and cfg.naive_rate == NAIVE_RATE
    cfg = config_from_args(parser.parse_args([*base, "--body", "binary", "--naive-rate", "0.5"]))
    assert cfg.bodies == ("binary",) and cfg.naive_rate == 0.5
    assert config_from_args(parser.parse_args(base)).bodies == ("json",)


def _part(max_rate: float, sustained: float | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"find_max": {"max_rate": max_rate, "probes": []}}
    if sustained is not None:
        part["find_max_sustained"] = {"max_rate": sustained, "probes": []}
    return part


def test_speedup_compares_like_with_like(tmp_path):
    cfg = ServeBenchConfig(repo=tmp_path, features=tmp_path, out=tmp_path / "x", find_max=True)
    # only the service meets the SLO: sustained rates of both (not SLO vs sustained)
    ratio, basis = _speedup(cfg, _part(1.5, sustained=250.0), _part(0.0, sustained=2.5))
    assert ratio == 100.0 and basis.startswith("the naive server missed")
    ratio, basis = _speedup(cfg, _part(800.0), _part(10.0, sustained=20.0))
    assert ratio == 80.0 and basis.startswith("max rate with p99")
    ratio, basis = _speedup(cfg, _part(0.0, sustained=300.0), _part(0.0, sustained=3.0))
    assert ratio == 100.0 and basis.startswith("both servers missed")


def _probes(*rows: tuple[float, float | None, int]) -> list[dict[str, Any]]:
    return [{"rate": r, "p99_ms": p, "errors": e, "passed": e == 0} for r, p, e in rows]


def _doc() -> dict[str, Any]:
    return {
        "stage": "coarse",
        "candidates": 10_000,
        "slo_p99_ms": 10.0,
        "machine": {"cores": 2, "load_average_at_start": [1.0, 1.0, 1.0]},
        "service_by_body": {
            "json": {"find_max": {"probes": _probes((400, 6.0, 0), (100, 3.0, 0), (800, 40.0, 0))}},
            "binary": {"find_max": {"probes": _probes((100, 2.0, 0), (200, 2.5, 0))}},
        },
        "naive": {
            "find_max": {"probes": _probes((8, None, 80), (2, 900.0, 0))},
            "find_max_sustained": {"probes": _probes((2, 950.0, 0), (1, 300.0, 0))},
        },
    }


def test_rate_series_sorts_and_merges_the_probes_of_each_server():
    series = rate_series(_doc())
    assert list(series) == ["service (json)", "service (binary)", "naive (json)"]
    assert [p["rate"] for p in series["service (json)"]] == [100, 400, 800]
    naive = series["naive (json)"]
    assert [(p["rate"], p["p99_ms"]) for p in naive] == [(1, 300.0), (2, 950.0), (8, None)]


def test_rate_chart_is_a_png_and_needs_probes(tmp_path):
    out = write_rate_chart(_doc(), tmp_path / "sub" / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no --find-max probes"):
        write_rate_chart({"service": {"runs": []}}, tmp_path / "none.png")


def test_in_process_cpu_measurement_runs_both_body_formats(tiny):
    settings = Settings(repo=tiny["repo"], features_dir=tiny["data"], reload_interval_s=0)
    base = build_workload(tiny["data"], "cascade", candidates=50, coarse_top_k=10, n_requests=2)
    workloads = {"json": base, "binary": base.with_body("binary")}
    app = create_app(settings)
    with TestClient(app):
        result = cpu_per_request(app, workloads, requests=3, rounds=2)
    assert list(result) == ["json", "binary"]
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in result.values())
    parsed = parse_cpu_per_request(settings, workloads, requests=4, rounds=2)
    assert list(parsed) == ["json", "binary"] and all(len(v) == 2 for v in parsed.values())
