"""Draw the rocketrank Grafana dashboard's panels from a live Prometheus, to PNG.

Grafana is not needed: the panels' PromQL (``deploy/grafana/dashboards/rocketrank.json``)
is sent to Prometheus' HTTP API (``/api/v1/query_range``) and the series are
drawn with matplotlib, one subplot per panel, with the panel's unit, legend
format and threshold lines (the SLOs). The same helpers list and expand every
dashboard expression for the end-to-end test, which evaluates them all.

Usage::

    python deploy/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --out docs/img/dashboard.png --minutes 5

Only the standard library and matplotlib are needed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "rocketrank.json"

MAIN_PANELS = (
    "Requests per second by stage",
    "Coarse latency p50 / p95 / p99",
    "Fine latency p50 / p95 / p99",
    "Cascade latency p50 / p95 / p99",
    "Error ratio#A",
    "Error ratio#B",
    "Candidates per request",
    "Step p99",
    "Feature store latency",
    "Degraded ratio",
    "Unknown ids per second",
    "CPU per instance",
    "Resident memory per instance",
)
"""Panels drawn by default (the dashboard's time-series panels an on-call engineer reads first).

``TITLE#REF`` draws only target ``REF`` of the panel, in a subplot of its own (the error
ratio's 5xx and 4xx lines would otherwise hide each other at 0)."""
_STYLES = (("-", 2.2), ("-.", 1.8), (":", 2.2), ("--", 1.4))
"""(linestyle, width) of a subplot's 1st, 2nd, ... series: equal series stay visible."""

_VARIABLE = re.compile(r"\$(\{)?(\w+)(?(1)\})")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DashboardError(ValueError):
    """The dashboard JSON or one of its expressions cannot be used; names the panel."""


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (bad PromQL, unreachable); names the query."""


@dataclass(frozen=True)
class PanelQuery:
    """One target (PromQL expression) of one dashboard panel.

    Attributes:
        panel_id: Grafana panel id.
        panel_title: panel title.
        panel_type: ``timeseries``, ``table``, ...
        ref_id: target letter (``A``, ``B``, ...).
        expr: the PromQL as written in the dashboard (Grafana variables unexpanded).
        legend: legend format (``{{stage}} p99``).
        instant: the panel asks for one instant value (tables) rather than a range.
    """

    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    legend: str
    instant: bool


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """Read a dashboard JSON file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DashboardError(f"{path}: not valid JSON: {exc}") from exc


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows, in layout order."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every PromQL target of every panel.

    Raises:
        DashboardError: a panel target without an ``expr``.
    """
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                raise DashboardError(
                    f"panel {panel.get('id')} {panel.get('title')!r} target "
                    f"{target.get('refId')!r} has no expr"
                )
            queries.append(
                PanelQuery(
                    panel_id=panel["id"],
                    panel_title=panel["title"],
                    panel_type=panel["type"],
                    ref_id=target.get("refId", "?"),
                    expr=expr,
                    legend=target.get("legendFormat", ""),
                    instant=bool(target.get("instant")) and not target.get("range", False),
                )
            )
    return queries


DEFAULT_VARIABLES = {"job": "rocketrank", "namespace": ".*", "instance": ".*"}
"""Dashboard variables as Grafana sets them by default (job of the scrape configs, "All")."""


def expand_variables(
    expr: str, rate_interval: str = "1m", variables: Mapping[str, str] | None = None
) -> str:
    """Replace Grafana's variables in ``expr`` as Grafana would before querying.

    Args:
        expr: PromQL with ``$__rate_interval``, ``$__interval``, ``$__range`` or
            dashboard variables (``$job``, ``$namespace``, ``$instance``).
        rate_interval: value for the interval variables (a PromQL duration).
        variables: dashboard variable -> value; a multi-value "All" is ``.*``.
            Defaults to :data:`DEFAULT_VARIABLES` (job ``rocketrank``, every
            namespace and instance).

    Raises:
        DashboardError: a variable with no value, so no query is sent half-expanded.
    """
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    values.update(
        {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": rate_interval}
    )

    def substitute(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in values:
            raise DashboardError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(substitute, expr)


def legend_text(legend: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend format: ``{{label}}`` replaced by the series' label value."""
    text = _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend).strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


class PrometheusClient:
    """The few calls of Prometheus' HTTP API that drawing and checking the dashboard need."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # Prometheus answers bad PromQL with 400 and a JSON error body.
            try:
                detail = json.loads(exc.read()).get("error", str(exc))
            except (json.JSONDecodeError, OSError):
                detail = str(exc)
            raise PrometheusError(f"{params.get('query')!r}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{params.get('query')!r}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(
        self, expr: str, start: float, end: float, step_s: float
    ) -> list[dict[str, Any]]:
        """Range query: ``[{"metric": {...}, "values": [[t, "v"], ...]}, ...]``."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step_s)}
        return self._get("/api/v1/query_range", params)["result"]

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rule groups (``/api/v1/rules``)."""
        return self._get("/api/v1/rules", {})["groups"]


# Grafana unit -> (scale applied to the values, axis label)
_UNITS: dict[str, tuple[float, str]] = {
    "s": (1000.0, "ms"),
    "percentunit": (100.0, "%"),
    "bytes": (1.0 / 2**20, "MiB"),
    "reqps": (1.0, "req/s"),
    "cps": (1.0, "per s"),
    "short": (1.0, ""),
}


def _panel_unit(panel: Mapping[str, Any]) -> tuple[float, str]:
    """(scale applied to values, y-axis label) from the panel's unit and axis label."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    scale, label = _UNITS.get(unit, (1.0, unit))
    return scale, defaults.get("custom", {}).get("axisLabel") or label


def _thresholds(panel: Mapping[str, Any]) -> list[float]:
    """Non-base threshold values of a panel (the SLO lines)."""
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [s["value"] for s in steps if s.get("value") is not None]


def render(
    client: PrometheusClient,
    out: Path,
    start: float,
    end: float,
    *,
    dashboard: Mapping[str, Any] | None = None,
    titles: Sequence[str] = MAIN_PANELS,
    rate_interval: str = "15s",
    step_s: float = 1.0,
    columns: int = 3,
) -> dict[str, int]:
    """Query each chosen panel over ``[start, end]`` and draw them on one PNG.

    Args:
        client: Prometheus to query.
        out: PNG path (parent folders are created).
        start, end: unix seconds of the time range.
        dashboard: parsed dashboard JSON (default: the shipped one).
        titles: titles of the time-series panels to draw, in order.
        rate_interval: value of ``$__rate_interval``.
        step_s: query resolution.
        columns: subplots per row.

    Returns:
        panel title -> number of series drawn (0 = "no data", drawn as such).

    Raises:
        DashboardError: a title that names no time-series panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dashboard = dashboard if dashboard is not None else load_dashboard()
    by_title = {p["title"]: p for p in iter_panels(dashboard) if p.get("type") == "timeseries"}
    missing = [t for t in titles if t.partition("#")[0] not in by_title]
    if missing:
        raise DashboardError(f"no time-series panel titled {missing}; have {sorted(by_title)}")

    rows = math.ceil(len(titles) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.0 * columns, 3.4 * rows), squeeze=False)
    drawn: dict[str, int] = {}
    for ax, spec in zip(axes.flat, titles):
        title, _, ref = spec.partition("#")
        panel = by_title[title]
        targets = [t for t in panel["targets"] if not ref or t.get("refId") == ref]
        if not targets:
            raise DashboardError(f"panel {title!r} has no target {ref!r}")
        if ref:
            title = f"{title}: {targets[0].get('legendFormat') or ref}"
        scale, unit_label = _panel_unit(panel)
        count = 0
        highest = 0.0
        for target in targets:
            expr = expand_variables(target["expr"], rate_interval)
            for series in client.query_range(expr, start, end, step_s):
                points = [(float(t), float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if not points:
                    continue
                times = [datetime.fromtimestamp(t, UTC) for t, _ in points]
                values = [v * scale for _, v in points]
                highest = max(highest, *values)
                style, width = _STYLES[count % len(_STYLES)]
                ax.plot(
                    times,
                    values,
                    linestyle=style,
                    linewidth=width,
                    label=legend_text(target.get("legendFormat", ""), series["metric"]),
                )
                count += 1
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        # a panel's thresholds belong to its first series (the error ratio's: the 5xx alert)
        primary = not ref or ref == panel["targets"][0].get("refId")
        for value in _thresholds(panel) if primary else []:
            label = "SLO" if unit == "s" else "alert threshold"
            ax.axhline(value * scale, color="tab:red", linestyle="--", linewidth=1.2, label=label)
            highest = max(highest, value * scale)
        ax.set_title(title, fontsize=11, loc="left")
        ax.set_ylabel(unit_label)
        # From 0 with headroom: a flat series (memory) would otherwise sit on the top edge.
        ax.set_ylim(0, highest * 1.15 if highest > 0 else 1.0)
        ax.set_xlim(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=8)
        if count:
            ax.legend(fontsize=8, loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        drawn[spec] = count
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    fig.suptitle(
        f"{dashboard.get('title', 'dashboard')} — from Prometheus, "
        f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S}–"
        f"{datetime.fromtimestamp(end, UTC):%H:%M:%S} UTC",
        fontsize=13,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--minutes", type=float, default=5.0, help="time range ending now")
    parser.add_argument("--rate-interval", default="15s", help="value of $__rate_interval")
    parser.add_argument("--step", type=float, default=1.0, help="query resolution, seconds")
    parser.add_argument(
        "--panel",
        action="append",
        dest="panels",
        help="panel title, or TITLE#REF for one target (repeatable; default: main)",
    )
    args = parser.parse_args(argv)
    end = time.time()
    try:
        drawn = render(
            PrometheusClient(args.prometheus),
            args.out,
            end - args.minutes * 60,
            end,
            dashboard=load_dashboard(args.dashboard),
            titles=args.panels or MAIN_PANELS,
            rate_interval=args.rate_interval,
            step_s=args.step,
        )
    except (DashboardError, PrometheusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    empty = [title for title, n in drawn.items() if n == 0]
    print(f"wrote {args.out} ({len(drawn)} panels" + (f"; no data: {empty})" if empty else ")"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
