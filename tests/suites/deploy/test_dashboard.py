"""The Grafana dashboard imports into any Grafana: no hard-coded datasource uid
(every panel and query uses the `datasource` variable) and `job` / `namespace` /
`instance` variables that every query filters on."""

from __future__ import annotations

import json
import re

from tests.helpers.deploy import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rocketrank.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return panels


def test_variables_datasource_job_namespace_instance() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "namespace", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["current"]["value"] == "rocketrank"  # the scrape configs' job
    for name in ("job", "namespace", "instance"):
        assert variables[name]["datasource"] == DATASOURCE, name
    for name in ("namespace", "instance"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    assert "$job" in variables["namespace"]["query"]["query"]
    assert {"$job", "$namespace"} <= set(
        re.findall(r"\$\w+", variables["instance"]["query"]["query"])
    )


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    panels = _panels(_dashboard())
    assert len(panels) > 10
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])


def test_no_datasource_uid_is_hard_coded() -> None:
    uids = re.findall(r'"uid":\s*"([^"]+)"', DASHBOARD.read_text())
    dashboard_uid = _dashboard()["uid"]
    # the dashboard's own uid, Grafana's built-in annotation source, and the variable
    assert set(uids) <= {dashboard_uid, "-- Grafana --", "grafana", "${datasource}"}, set(uids)


def test_every_query_filters_on_job_and_namespace() -> None:
    for panel in _panels(_dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'job="rocketrank"' not in expr, panel["title"]
            selectors = re.findall(r"\{([^}]*)\}", expr)
            assert selectors, expr
            for selector in selectors:
                assert 'job="$job"' in selector and 'namespace=~"$namespace"' in selector, expr


def test_the_picture_draws_existing_panels_with_4xx_apart_from_5xx() -> None:
    from tests.helpers.observability import render_dashboard

    by_title = {p["title"]: p for p in _panels(_dashboard()) if p["type"] == "timeseries"}
    for spec in render_dashboard.MAIN_PANELS:
        title, _, ref = spec.partition("#")
        assert title in by_title, spec
        assert not ref or ref in {t["refId"] for t in by_title[title]["targets"]}, spec
    errors = {t["refId"]: t["expr"] for t in by_title["Error ratio"]["targets"]}
    drawn = {spec.partition("#")[2] for spec in render_dashboard.MAIN_PANELS if "#" in spec}
    assert {ref for ref, expr in errors.items() if 'code=~"4..' in expr} <= drawn
    assert {ref for ref, expr in errors.items() if 'code=~"5..' in expr} <= drawn
    assert "Error ratio" not in render_dashboard.MAIN_PANELS  # never both lines on one axis
