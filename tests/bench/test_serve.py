"""`rocketrank bench serve` pieces: workload, bare model, naive baseline, JSON document.

Uses the service's tiny TorchScript artifacts (``tests/helpers/service.py``).
What is checked is that each measurement computes the right thing on the right
inputs -- never how fast it was.
"""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from bench.common.report import render
from bench.serve.bare import BareRequest, FeatureTable, load_stage_artifacts
from bench.serve.command import format_table
from bench.serve.naive_server import NaiveScorer, ServerTimeHeader, create_naive_app
from bench.serve.run import BenchError, ServeBenchConfig, median_summary, run_serve_bench
from bench.serve.workload import WorkloadError, build_workload
from tests.helpers import service as sf

REQUIRED_KEYS = {
    "qps",
    "errors",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "server_time_ratio_vs_bare",
    "speedup_vs_naive",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-serve")
    made = sf.make_repo(root)
    # a log split with context columns, as `rocketrank synth` writes one
    pd.DataFrame({"hour": [3, 20, 21], "device": ["ios", "web", "android"]}).to_parquet(
        made["data"] / "test.parquet", index=False
    )
    return made


# ----------------------------------------------------------------------------- workload


def test_workload_is_deterministic_and_shaped_per_stage(tiny):
    w1 = build_workload(tiny["data"], "cascade", candidates=100, context_features=["hour"], seed=3)
    w2 = build_workload(tiny["data"], "cascade", candidates=100, context_features=["hour"], seed=3)
    assert w1.bodies == w2.bodies and len(w1.bodies) == 32
    body = orjson.loads(w1.bodies[0])
    assert body["stage"] == "cascade" and body["top_k"] == 50 and body["coarse_top_k"] == 500
    assert len(body["candidates"]) == 100 == len(set(body["candidates"]))  # no repeats
    assert set(body["candidates"]) <= set(sf.ITEM_IDS.tolist())
    assert body["user_id"] in set(sf.USER_IDS.tolist())
    assert set(body["context"]) == {"hour"} and body["context"]["hour"] in (3, 20, 21)
    fine = orjson.loads(build_workload(tiny["data"], "fine").bodies[0])
    # 500 candidates from 300 items: drawn with replacement
    assert "coarse_top_k" not in fine and len(fine["candidates"]) == 500
    assert set(fine["candidates"]) <= set(sf.ITEM_IDS.tolist())


def test_workload_refuses_bad_input(tiny, tmp_path):
    with pytest.raises(WorkloadError, match="stage must be"):
        build_workload(tiny["data"], "medium")
    with pytest.raises(WorkloadError, match="does not exist"):
        build_workload(tmp_path, "coarse")
    with pytest.raises(WorkloadError, match=">= 1"):
        build_workload(tiny["data"], "coarse", candidates=0)


# ----------------------------------------------------------------------------- bare model


def test_bare_model_computes_the_artifacts_logits(tiny):
    arts = load_stage_artifacts(tiny["repo"], {"coarse": "coarse", "fine": "fine"})
    users = FeatureTable(tiny["data"] / "users.parquet", "user_id")
    items = FeatureTable(tiny["data"] / "items.parquet", "item_id")
    call = build_workload(
        tiny["data"], "cascade", candidates=200, coarse_top_k=20, context_features=["hour"]
    ).calls[0]
    req = BareRequest(arts, users, items, call)
    coarse_part, fine_part = req.parts
    user = sf.user_row(tiny["users"], call.user_id)
    ids = call.candidates
    rows = sf.item_rows(tiny["items"], ids.tolist())
    ref = sf.reference_scores(
        tiny["repo"], "coarse", tiny["versions"]["coarse"], user, call.context, rows
    )
    with torch.inference_mode():
        coarse = torch.sigmoid(coarse_part()).numpy()
    exported = np.isin(ids, arts["coarse"].item_ids)  # the others use a zero vector in "bare"
    assert exported.sum() > 100
    np.testing.assert_allclose(coarse[exported], ref[exported], atol=1e-5)
    # the fine part scores exactly the coarse top-20, with the fine model
    survivors = ids[np.argsort(-coarse, kind="stable")[:20]]
    fine_ref = sf.reference_scores(
        tiny["repo"],
        "fine",
        tiny["versions"]["fine"],
        user,
        call.context,
        sf.item_rows(tiny["items"], survivors.tolist()),
    )
    with torch.inference_mode():
        fine = torch.sigmoid(fine_part()).numpy()
    np.testing.assert_allclose(np.sort(fine), np.sort(fine_ref), atol=1e-5)


# ----------------------------------------------------------------------------- naive baseline


@pytest.fixture(scope="module")
def naive_client(tiny):
    scorer = NaiveScorer(tiny["repo"], tiny["data"], {"coarse": "coarse", "fine": "fine"})
    with TestClient(ServerTimeHeader(create_naive_app(scorer))) as client:
        yield client


def test_naive_server_ranks_with_the_same_model_and_reports_its_time(tiny, naive_client):
    ids = sf.ITEM_IDS[:40].tolist()
    user_id = int(sf.USER_IDS[5])
    body = {"user_id": user_id, "context": {"hour": 20, "device": "ios"}, "candidates": ids}
    resp = naive_client.post("/v1/rank", json={**body, "stage": "fine", "top_k": 7})
    assert resp.status_code == 200
    assert float(resp.headers["x-server-time-ms"]) > 0
    items = resp.json()["items"]
    ref = sf.reference_scores(
        tiny["repo"],
        "fine",
        tiny["versions"]["fine"],
        sf.user_row(tiny["users"], user_id),
        body["context"],
        sf.item_rows(tiny["items"], ids),
    )
    best = np.argsort(-ref, kind="stable")[:7]
    assert [it["item_id"] for it in items] == [ids[i] for i in best]
    np.testing.assert_allclose([it["score"] for it in items], ref[best], atol=1e-5)


def test_naive_cascade_keeps_coarse_top_k_then_fine_top_k(naive_client):
    body = {
        "user_id": int(sf.USER_IDS[0]),
        "candidates": sf.ITEM_IDS[:100].tolist(),
        "stage": "cascade",
        "coarse_top_k": 10,
        "top_k": 4,
    }
    items = naive_client.post("/v1/rank", json=body).json()["items"]
    assert len(items) == 4
    assert all(it["coarse_score"] is not None for it in items)
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)
    coarse = naive_client.post("/v1/rank", json={**body, "stage": "coarse", "top_k": 10}).json()
    assert {it["item_id"] for it in items} <= {it["item_id"] for it in coarse["items"]}


# ----------------------------------------------------------------------------- JSON document


def test_median_summary_takes_per_key_medians_and_sums_errors():
    runs = [
        {"qps": 99.0, "errors": 0, "p99_ms": 5.0, "error_kinds": {}},
        {"qps": 100.0, "errors": 2, "p99_ms": 9.0, "error_kinds": {"timeout": 2}},
        {"qps": 98.0, "errors": 1, "p99_ms": 4.0, "error_kinds": {}},
    ]
    m = median_summary(runs)
    assert m == {"qps": 99.0, "errors": 3, "p99_ms": 5.0}
    assert median_summary([{"errors": 0, "p99_ms": None}, {"errors": 0, "p99_ms": 1.0}]) == {
        "errors": 0,
        "p99_ms": None,
    }


def test_missing_model_is_a_clear_error(tiny, tmp_path):
    cfg = ServeBenchConfig(repo=tiny["repo"], features=tiny["data"], out=tmp_path / "x.json")
    cfg.coarse_model = "nope"
    with pytest.raises(BenchError, match="needs a coarse model named 'nope'"):
        run_serve_bench(cfg, log=lambda _: None)


@pytest.mark.slow
def test_bench_serve_end_to_end_writes_every_key(tiny, tmp_path):
    out = tmp_path / "bench.json"
    cfg = ServeBenchConfig(
        repo=tiny["repo"],
        features=tiny["data"],
        out=out,
        stage="cascade",
        candidates=200,
        coarse_top_k=20,
        top_k=5,
        rate=20.0,
        duration=1.0,
        runs=2,
        warmup=0.3,
        requests=4,
        bare_repeats=2,
        generator_check_rate=50.0,
        naive_rate=10.0,
        bodies=("json", "binary"),
        min_catalogue=0,
    )
    lines: list[str] = []
    doc = run_serve_bench(cfg, log=lines.append, command="test")
    assert set(doc) >= REQUIRED_KEYS
    assert doc["service"]["median"]["errors"] == 0
    assert len(doc["service"]["runs"]) == 2 and doc["service"]["runs"][0]["requests"] == 20
    assert doc["server_time_p50_ms"] > 0 and doc["bare_p50_ms"] > 0
    assert doc["server_time_ratio_vs_bare"] == pytest.approx(
        doc["server_time_p50_ms"] / doc["bare_p50_ms"]
    )
    assert doc["speedup_basis"].startswith("server-side time p50 per request, naive (at 10")
    assert doc["speedup_vs_naive"] == pytest.approx(
        doc["naive"]["median"]["server_time_p50_ms"] / doc["server_time_p50_ms"]
    )
    assert doc["naive"]["runs"][0]["server_time_count"] > 0  # x-server-time-ms was read
    assert doc["naive"]["runs"][0]["requests"] == 10  # 1 s at its own rate
    # the binary bodies were answered in binary, and their server time read from its header
    binary_runs = doc["service_by_body"]["binary"]["runs"]
    assert binary_runs[0]["errors"] == 0 and binary_runs[0]["server_time_count"] == 20
    assert "coarse_inference" in binary_runs[0]["server_steps_p50_ms"]
    assert doc["bodies"]["binary"]["body_bytes_mean"] < doc["bodies"]["json"]["body_bytes_mean"]
    assert doc["catalogue_items"] == sf.N_ITEMS
    null = doc["generator_check"]["median"]
    assert null["errors"] == 0 and null["requests"] == 50  # 1 s at 50/s against the null server
    for key in ("cpu_model", "cores", "torch", "date_utc"):
        assert key in doc["machine"]
    table = format_table(doc)
    assert "svc/json" in table and "svc/binary" in table and "naive" in table
    assert "server_time_ratio_vs_bare" in table and "binary: " in table
    out.write_bytes(orjson.dumps(doc))  # serialisable as written
    md = render([out])
    assert "| cascade | 1 | 200 | 20 |" in md and "speed-up basis" in md
    assert "Per body format" in md and "| cascade | 1 | binary |" in md
