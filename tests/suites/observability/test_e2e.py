"""End to end: the real service under mixed load, scraped by a real Prometheus.

One scenario per module: publish a coarse and a fine model, load their features
into the real Redis under a private key prefix, start ``rocketrank serve`` on
it, start Prometheus (the shipped config and alert rules, pointed at the
service, scraping every second), send ~20 s of mixed traffic (coarse, fine,
cascade, bad requests, unknown user and item ids), wait until Prometheus has
scraped the last request, then evaluate every dashboard and alert expression
through Prometheus' HTTP API.

Set ``RR_DASHBOARD_PNG=docs/img/dashboard.png`` to also write the rendered
dashboard there (how the README's picture is made), and ``RR_LOAD_SECONDS`` to
send load for longer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.observability import ROOT, PrometheusServer, render_dashboard, require_tool
from tests.helpers.service import ITEM_IDS, UNKNOWN_ITEM, UNKNOWN_USER, USER_IDS, ServiceProcess
from tests.helpers.service import make_repo as make_service_repo

pytestmark = [pytest.mark.slow, pytest.mark.prometheus, pytest.mark.redis]

LOAD_SECONDS = float(os.environ.get("RR_LOAD_SECONDS", "20"))
REQUESTS_PER_SECOND = 25.0
RATE_WINDOW = "1m"  # $__rate_interval while checking: covers the whole load
COARSE_CANDIDATES = 290
FINE_CANDIDATES = 60


def _request_mix() -> list[tuple[str, Any]]:
    """One cycle of the load: (kind, JSON body or raw bytes), in a fixed order."""
    users = [int(u) for u in USER_IDS]
    items = [int(i) for i in ITEM_IDS]
    coarse = {"user_id": users[0], "candidates": items[:COARSE_CANDIDATES], "stage": "coarse"}
    fine = {"user_id": users[1], "candidates": items[:FINE_CANDIDATES], "stage": "fine"}
    cascade = {
        "user_id": users[2],
        "context": {"hour": 20, "device": "ios"},
        "candidates": items[:COARSE_CANDIDATES],
        "stage": "cascade",
        "coarse_top_k": 40,
        "top_k": 10,
    }
    # Same candidate counts as the plain requests, one id replaced by an unknown one.
    coarse_unknown_item = {**coarse, "candidates": [*items[: COARSE_CANDIDATES - 1], UNKNOWN_ITEM]}
    fine_unknown_user = {**fine, "user_id": UNKNOWN_USER}
    return [
        ("coarse", coarse),
        ("cascade", cascade),
        ("fine", fine),
        ("cascade", cascade),
        ("coarse", coarse_unknown_item),
        ("fine", fine_unknown_user),
        ("bad", {"user_id": "not-an-int", "candidates": items[:3], "stage": "fine"}),
        ("cascade", cascade),
        ("bad", {"user_id": users[0], "candidates": items[:3], "stage": "medium"}),
        ("bad", b"{not json"),
    ]


@dataclass
class Scenario:
    """What the load sent and where to ask about it."""

    prometheus: render_dashboard.PrometheusClient
    versions: dict[str, str]
    sent: Counter = field(default_factory=Counter)  # (kind, status code) -> requests
    process_metrics: bool = False  # the service exports prometheus-client's process_* metrics
    start: float = 0.0
    end: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def by_code(self) -> Counter:
        counts: Counter = Counter()
        for (_, code), n in self.sent.items():
            counts[str(code)] += n
        return counts


def _send_load(base: str, seconds: float, sent: Counter) -> None:
    mix = _request_mix()
    interval = 1.0 / REQUESTS_PER_SECOND
    with httpx.Client(base_url=base, timeout=30.0) as client:
        deadline = time.monotonic() + seconds
        due = time.monotonic()
        i = 0
        while time.monotonic() < deadline:
            kind, body = mix[i % len(mix)]
            if isinstance(body, bytes):
                response = client.post(
                    "/v1/rank", content=body, headers={"content-type": "application/json"}
                )
            else:
                response = client.post("/v1/rank", json=body)
            sent[(kind, response.status_code)] += 1
            i += 1
            due += interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def _load_features(redis_url: str, data: Path, prefix: str) -> None:
    argv = ["features", "load", "--redis", redis_url, "--data", str(data), "--prefix", prefix]
    result = subprocess.run(
        [sys.executable, "-m", "rocketrank", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _delete_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _scalar(client: render_dashboard.PrometheusClient, expr: str) -> float | None:
    result = client.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Scenario]:
    prometheus_binary = require_tool("prometheus")
    root = tmp_path_factory.mktemp("observe")
    repo = make_service_repo(root)
    prefix = f"rocketrank-test:{uuid.uuid4().hex[:12]}:"
    _load_features(redis_url, repo["data"], prefix)
    service = ServiceProcess(
        ["--repo", str(repo["repo"]), "--redis", redis_url, "--redis-prefix", prefix],
        # A generous Redis timeout: this test is about the scrape path, not degradation,
        # and a busy 2-core machine can stall a round trip past the 20 ms default.
        env={"ROCKETRANK_RELOAD_INTERVAL_S": "0", "ROCKETRANK_REDIS_TIMEOUT_MS": "2000"},
    )
    prometheus: PrometheusServer | None = None
    try:
        service.wait_ready()
        prometheus = PrometheusServer(prometheus_binary, f"127.0.0.1:{service.port}")
        prometheus.start()
        client = render_dashboard.PrometheusClient(prometheus.url)
        _wait_for(lambda: _scalar(client, 'up{job="rocketrank"}') == 1.0, 30, "the first scrape")
        result = Scenario(prometheus=client, versions=repo["versions"])
        exposition = httpx.get(service.base + "/metrics", timeout=10).text
        result.process_metrics = "process_cpu_seconds_total" in exposition
        result.start = time.time()
        _send_load(service.base, LOAD_SECONDS, result.sent)
        result.end = time.time()
        _wait_for(
            lambda: (
                _scalar(client, 'sum(rocketrank_requests_total{job="rocketrank"})') == result.total
            ),
            30,
            f"Prometheus to scrape all {result.total} requests",
        )
        yield result
    finally:
        if prometheus is not None:
            prometheus.cleanup()
        service.stop()
        _delete_keys(redis_url, prefix)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the load itself


def test_the_load_mixed_successes_and_client_errors(scenario: Scenario) -> None:
    codes = scenario.by_code()
    assert codes["200"] > 0 and sum(n for c, n in codes.items() if c.startswith("4")) > 0
    assert not [c for c in codes if c.startswith("5")], scenario.sent
    for kind in ("coarse", "fine", "cascade"):
        assert scenario.sent[(kind, 200)] > 0, kind


def test_prometheus_counted_every_request_by_status_code(scenario: Scenario) -> None:
    result = scenario.prometheus.query(
        'sum by (code) (rocketrank_requests_total{job="rocketrank"})'
    )
    counted = {r["metric"]["code"]: round(float(r["value"][1])) for r in result}
    assert counted == dict(scenario.by_code())


# ---------------------------------------------------------------- dashboard


QUERIES = render_dashboard.panel_queries(render_dashboard.load_dashboard())


def test_the_service_exports_process_cpu_and_memory(scenario: Scenario) -> None:
    # The dashboard's CPU and memory panels read prometheus-client's process_* series.
    assert scenario.process_metrics


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel_title}-{q.ref_id}")
def test_every_dashboard_query_returns_data(scenario: Scenario, query) -> None:
    expr = render_dashboard.expand_variables(query.expr, RATE_WINDOW)
    result = scenario.prometheus.query(expr)
    assert result, f"panel {query.panel_title!r} ({query.ref_id}) is empty: {expr}"
    for series in result:
        value = float(series["value"][1])
        assert value == value, f"{query.panel_title}: NaN in {series}"  # NaN != NaN


def test_dashboard_variables_resolve_to_the_scraped_instance(scenario: Scenario) -> None:
    for variable in render_dashboard.load_dashboard()["templating"]["list"]:
        if variable["type"] == "datasource":
            continue
        query = render_dashboard.expand_variables(variable["query"]["query"])
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        values = _by_label(scenario.prometheus, f"group by ({label}) ({selector})", label)
        assert len(values) == 1, (variable["name"], values)


def _panel(title: str, ref: str = "A") -> str:
    for query in QUERIES:
        if query.panel_title == title and query.ref_id == ref:
            return render_dashboard.expand_variables(query.expr, RATE_WINDOW)
    raise KeyError(title)


def _by_label(client, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in client.query(expr)}


def test_panels_show_what_the_load_did(scenario: Scenario) -> None:
    client = scenario.prometheus
    qps = _by_label(client, _panel("Requests per second by stage"), "stage")
    assert {"coarse", "fine", "cascade"} <= set(qps)
    assert all(v > 0 for v in qps.values())

    errors_5xx = _scalar(client, _panel("Error ratio", "A"))
    errors_4xx = _scalar(client, _panel("Error ratio", "B"))
    assert errors_5xx == 0.0
    assert 0.0 < errors_4xx < 1.0

    mean_candidates = _by_label(client, _panel("Candidates per request", "A"), "stage")
    assert mean_candidates["coarse"] == pytest.approx(COARSE_CANDIDATES)
    assert mean_candidates["fine"] == pytest.approx(FINE_CANDIDATES)
    assert mean_candidates["cascade"] == pytest.approx(COARSE_CANDIDATES)

    for stage in ("Coarse", "Fine", "Cascade"):
        p50, p95, p99 = (
            _scalar(client, _panel(f"{stage} latency p50 / p95 / p99", ref)) for ref in "ABC"
        )
        assert 0 < p50 <= p95 <= p99 <= 1.0, (stage, p50, p95, p99)

    assert set(_by_label(client, _panel("Feature store latency"), "store")) == {"redis"}
    assert _by_label(client, _panel("Feature store errors per second"), "store") == {"redis": 0.0}
    assert _scalar(client, _panel("Degraded ratio")) == 0.0
    unknown = _by_label(client, _panel("Unknown ids per second"), "side")
    assert unknown["item"] > 0 and unknown["user"] > 0
    steps = _by_label(client, _panel("Step p99"), "step")
    assert {"feature_fetch", "coarse_inference", "fine_inference", "serialize"} <= set(steps)


def test_loaded_model_versions_panel_lists_the_served_versions(scenario: Scenario) -> None:
    rows = scenario.prometheus.query(_panel("Loaded model versions"))
    served = {r["metric"]["stage"]: r["metric"]["version"] for r in rows}
    assert served == scenario.versions


# ---------------------------------------------------------------- alerts


def _alert_rules(scenario: Scenario) -> list[dict]:
    return [r for g in scenario.prometheus.rules() for r in g["rules"] if r["type"] == "alerting"]


def test_every_alert_rule_is_loaded_and_evaluates(scenario: Scenario) -> None:
    rules = _alert_rules(scenario)
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    assert len(rules) == sum(len(g["rules"]) for g in groups)
    for rule in rules:
        # Raises PrometheusError (bad PromQL, unknown function) instead of returning.
        scenario.prometheus.query(rule["query"])
    # Rules evaluate every second: after the load each has been evaluated without error.
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_availability_alerts_are_quiet_while_the_service_is_up(scenario: Scenario) -> None:
    by_name = {r["name"]: r for r in _alert_rules(scenario)}
    for name in ("RocketrankInstanceDown", "RocketrankTargetMissing", "RocketrankNoTraffic"):
        assert scenario.prometheus.query(by_name[name]["query"]) == [], name
        assert by_name[name]["state"] == "inactive", name


# ---------------------------------------------------------------- the picture


def test_the_dashboard_renders_from_prometheus(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "dashboard.png"
    drawn = render_dashboard.render(
        scenario.prometheus,
        out,
        scenario.start - 5,
        scenario.end + 3,
        rate_interval="10s",
    )
    assert set(drawn) == set(render_dashboard.MAIN_PANELS)
    empty = {title for title, n in drawn.items() if n == 0}
    assert not empty, drawn
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("RR_DASHBOARD_PNG")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, target)
