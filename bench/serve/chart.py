"""p99 latency versus offered rate, from the ``--find-max`` probes of a serve benchmark.

One line per server and body format (service JSON, service binary, naive), the
probes sorted by offered rate; probes that failed on errors or throughput (not
only on latency) are drawn hollow; the stage's SLO is a dashed horizontal line.
Latencies span 1 ms to seconds, rates 1 to thousands: both axes are logarithmic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # backend chosen above, before pyplot loads


def rate_series(doc: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{label: probes sorted by rate}`` of every find-max search in a serve document.

    Each probe is ``{"rate", "p99_ms", "passed", "errors"}``; the SLO search and the
    sustained-throughput search of one server are merged (a rate probed twice keeps
    the later probe).
    """
    parts: dict[str, Mapping[str, Any] | None] = {
        f"service ({body})": part for body, part in (doc.get("service_by_body") or {}).items()
    }
    if not parts and doc.get("service"):
        parts[f"service ({doc.get('body', 'json')})"] = doc["service"]
    parts["naive (json)"] = doc.get("naive")
    series: dict[str, list[dict[str, Any]]] = {}
    for label, part in parts.items():
        if not part:
            continue
        by_rate: dict[float, dict[str, Any]] = {}
        for key in ("find_max", "find_max_sustained"):
            for p in (part.get(key) or {}).get("probes", []):
                by_rate[float(p["rate"])] = {
                    "rate": float(p["rate"]),
                    "p99_ms": p.get("p99_ms"),
                    "passed": bool(p.get("passed")),
                    "errors": int(p.get("errors") or 0),
                }
        if by_rate:
            series[label] = [by_rate[r] for r in sorted(by_rate)]
    return series


def write_rate_chart(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write the PNG; returns its path. Probes without a p99 (nothing answered) are left out.

    Raises:
        ValueError: the document holds no find-max probes.
    """
    series = rate_series(doc)
    if not series:
        raise ValueError("no --find-max probes in the document: nothing to chart")
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for label, probes in series.items():
        shown = [p for p in probes if p["p99_ms"] is not None]
        if not shown:
            continue
        rates = [p["rate"] for p in shown]
        p99 = [p["p99_ms"] for p in shown]
        (line,) = ax.plot(rates, p99, "-", label=label)
        ok = [p["errors"] == 0 for p in shown]
        ax.scatter(
            rates,
            p99,
            facecolors=[line.get_color() if o else "none" for o in ok],
            edgecolors=line.get_color(),
            zorder=3,
        )
    slo = doc.get("slo_p99_ms")
    if slo:
        ax.axhline(slo, color="grey", linestyle="--", linewidth=1, label=f"SLO p99 {slo:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("p99 latency (ms, from the due time)")
    machine = doc.get("machine") or {}
    load = machine.get("load_average_at_start")
    load = "/".join(f"{x:.1f}" for x in load) if load else "?"
    ax.set_title(
        f"{doc.get('stage', '?')}, {doc.get('candidates', '?')} candidates; "
        f"{machine.get('cores', '?')} cores, load average at start {load}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["rate_series", "write_rate_chart"]
