"""Static checks of the Prometheus config, alert rules and Grafana dashboard.

promtool validates the config and rules, runs the alert unit tests
(``deploy/prometheus/alerts_test.yml``) and parses every dashboard expression;
the rest cross-checks the dashboard against the alerts (same SLOs), against the
service's metric names, and against Grafana's provisioning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.observability import (
    DASHBOARD_JSON,
    DEPLOY,
    PROMETHEUS_DIR,
    render_dashboard,
    require_tool,
    run_tool,
)

SLO_SECONDS = {"coarse": 0.010, "fine": 0.008, "cascade": 0.015}
SEVERITIES = {"page", "warning"}
METRIC_NAME = re.compile(r"\b((?:rocketrank|process)_[a-z_]+)\b")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


@pytest.fixture(scope="module")
def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# ---------------------------------------------------------------- promtool


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = require_tool("promtool")
    result = run_tool(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = require_tool("promtool")
    result = run_tool(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    """alerts_test.yml: each alert fires on its synthetic condition and stays
    quiet on the near misses (fast stage, too little traffic, 4xx only)."""
    promtool = require_tool("promtool")
    result = run_tool(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _check_as_recording_rules(promtool: str, exprs: dict[str, str], tmp_path: Path):
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": k, "expr": v} for k, v in exprs.items()]}
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return run_tool(promtool, "check", "rules", str(path))


def test_every_dashboard_expression_parses(dashboard: dict, tmp_path: Path) -> None:
    """promtool parses each panel expression (Grafana variables expanded) as a rule."""
    promtool = require_tool("promtool")
    exprs = {
        f"dashboard:panel_{q.panel_id}_{q.ref_id}": render_dashboard.expand_variables(q.expr)
        for q in render_dashboard.panel_queries(dashboard)
    }
    assert len(exprs) >= 20
    result = _check_as_recording_rules(promtool, exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parse_check_rejects_broken_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    result = _check_as_recording_rules(
        promtool,
        {"dashboard:broken": "sum by (stage) (rate(rocketrank_requests_total[1m]"},
        tmp_path,
    )
    assert result.returncode != 0


# ---------------------------------------------------------------- alert rules


def test_every_alert_has_for_severity_and_runbook(alert_rules: list[dict]) -> None:
    for rule in alert_rules:
        name = rule["alert"]
        assert re.fullmatch(r"Rocketrank[A-Z]\w+", name), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: for {rule.get('for')!r}"
        assert rule["labels"]["severity"] in SEVERITIES, name
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"][key].strip()) > 20, f"{name}: {key} too short"


def test_alerts_cover_what_on_call_needs(alert_rules: list[dict]) -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alert_rules}
    for stage in SLO_SECONDS:
        assert f"Rocketrank{stage.capitalize()}P99OverSLO" in exprs
    assert 'code=~"5.."' in exprs["RocketrankHigh5xxRatio"]
    assert "rocketrank_degraded_requests_total" in exprs["RocketrankHighDegradedRatio"]
    assert 'result="failed"' in exprs["RocketrankModelReloadFailed"]
    assert exprs["RocketrankInstanceDown"] == 'up{job="rocketrank"} == 0'
    assert "absent(up" in exprs["RocketrankTargetMissing"]
    assert "rocketrank_requests_total" in exprs["RocketrankNoTraffic"]


def test_latency_alerts_use_the_slo_of_their_stage(alert_rules: list[dict]) -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules}
    for stage, slo in SLO_SECONDS.items():
        rule = by_name[f"Rocketrank{stage.capitalize()}P99OverSLO"]
        expr = " ".join(rule["expr"].split())
        assert "histogram_quantile(0.99," in expr
        assert f'stage="{stage}"' in expr
        assert "rocketrank_request_duration_seconds_bucket" in expr
        threshold = float(re.search(r"\)\s*>\s*([0-9.]+)", expr).group(1))
        assert threshold == pytest.approx(slo)
        assert rule["labels"]["stage"] == stage


# ---------------------------------------------------------------- dashboard


def _panels(dashboard: dict) -> list[dict]:
    return list(render_dashboard.iter_panels(dashboard))


def test_dashboard_panels_are_well_formed(dashboard: dict) -> None:
    # every panel queries the datasource variable (tests/suites/deploy/test_dashboard.py)
    datasource = {"uid": "${datasource}"}
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for row in dashboard["panels"] for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dashboard):
        title = panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], title
        assert panel.get("description"), f"{title}: no description"
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], title
            assert target.get("legendFormat"), f"{title} {target['refId']}: no legend"
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"


def test_latency_panels_have_p50_p95_p99_and_the_slo_threshold(dashboard: dict) -> None:
    by_title = {p["title"]: p for p in _panels(dashboard)}
    for stage, slo in SLO_SECONDS.items():
        panel = by_title[f"{stage.capitalize()} latency p50 / p95 / p99"]
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"
        quantiles = set()
        for target in panel["targets"]:
            expr = target["expr"]
            match = re.match(r"histogram_quantile\(([0-9.]+), sum by \(le\) \(rate\(", expr)
            assert match, expr
            assert "rocketrank_request_duration_seconds_bucket{" in expr
            assert f'stage="{stage}"' in expr and "[$__rate_interval]" in expr
            quantiles.add(float(match.group(1)))
        assert quantiles == {0.5, 0.95, 0.99}
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps if s["value"] is not None] == [pytest.approx(slo)]
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_dashboard_shows_every_signal_the_issue_asks_for(dashboard: dict) -> None:
    text = " ".join(q.expr for q in render_dashboard.panel_queries(dashboard))
    for needle in (
        "sum by (stage) (rate(rocketrank_requests_total",  # QPS by stage
        'code=~"5.."',  # error ratio
        "rocketrank_candidates_sum",  # candidates per request
        "rocketrank_feature_store_duration_seconds_bucket",
        "rocketrank_feature_store_errors_total",
        "rocketrank_degraded_requests_total",
        "rocketrank_unknown_ids_total",
        "rocketrank_model_info",
        "rocketrank_reloads_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needle in text, needle


def _service_metric_families(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Metric family -> its sample names, from the service's own ServiceMetrics."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    from service.metrics import ServiceMetrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name: {family.name + suffix for suffix in suffixes[family.type]}
        for family in ServiceMetrics().registry.collect()
    }


def test_dashboard_and_alerts_use_only_metrics_the_service_exports(
    dashboard: dict, alert_rules: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    families = _service_metric_families(monkeypatch)
    exported = set().union(*families.values())
    exprs = [q.expr for q in render_dashboard.panel_queries(dashboard)]
    exprs += [rule["expr"] for rule in alert_rules]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    # process_* come from prometheus-client's process collector.
    unknown = {n for n in used - exported if not n.startswith("process_")}
    assert not unknown, f"not exported by service/metrics.py: {sorted(unknown)}"
    unshown = sorted(
        f for f, samples in families.items() if f.startswith("rocketrank_") and not samples & used
    )
    assert not unshown, f"service metrics on no panel or alert: {unshown}"


def test_grafana_dashboard_provider_points_at_the_dashboards_mount() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/rocketrank.yml").read_text()
    )["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ---------------------------------------------------------------- renderer helpers


def test_expand_variables_replaces_grafana_variables() -> None:
    expr = 'rate(x{job="rocketrank", instance=~"$instance"}[$__rate_interval])'
    assert (
        render_dashboard.expand_variables(expr, "30s")
        == 'rate(x{job="rocketrank", instance=~".*"}[30s])'
    )
    assert render_dashboard.expand_variables("y[${__range}]", "5m") == "y[5m]"
    assert render_dashboard.expand_variables(
        'x{instance=~"$instance"}', variables={"instance": "a:1|b:2"}
    ) == ('x{instance=~"a:1|b:2"}')


def test_expand_variables_refuses_an_unknown_variable() -> None:
    with pytest.raises(render_dashboard.DashboardError, match=r"\$pod"):
        render_dashboard.expand_variables('x{pod="$pod"}')


def test_legend_text_follows_grafana_legend_format() -> None:
    assert render_dashboard.legend_text("{{stage}} p99", {"stage": "fine"}) == "fine p99"
    assert render_dashboard.legend_text("", {"b": "2", "a": "1"}) == "a=1, b=2"
