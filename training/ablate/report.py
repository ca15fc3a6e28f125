"""The ablation report: ``report.json``, ``report.md`` and ``report.png``.

``report.json`` (``"format": 2``) is one object:

* ``header`` — task, data, nets, privileged features, seeds, epochs, batch;
* ``seeds`` — the run seeds; ``bootstrap`` — replicates, seed, level, unit;
* ``rows`` — one per variant, in report order (``training.ablate.summary``):
  ``light_auc`` (mean ± t interval over seeds), ``light_auc_bootstrap``,
  ``booster_auc``, ``delta_vs_light_alone`` (paired difference: ``mean``,
  ``low``, ``high``, ``p_value_two_sided``, ``per_seed``, ...),
  ``gap_closed_auc``, ``representable_auc`` and ``gap_closed_representable``
  (against the representable teacher), ``light_calibration_after``, seed
  means of the run metrics (``light``, ``booster``, times) and ``runs`` (one
  line per seed);
* ``configs`` — every variant's final run config (before the seed);
  ``variant_overrides`` — what ``--variant-config`` set;
* ``tuning`` — null, or the budget, sampler and per variant the chosen values
  and every trial's validation AUC.

``report.md`` shows the same numbers as tables; ``report.png`` is a dot plot of
the paired Δ AUC with its interval per variant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.provenance import json_safe
from training.ablate.stats import describe_gain
from training.ablate.variants import privileged_features
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.loop.checkpoint import atomic_write_text
from training.plots import plot_ablation

ONE_SEED_NOTE = (
    "One seed: every interval covers test sampling only (which requests were drawn), "
    "not the spread between training runs, and there is no interval over seeds. "
    "A claim about a recipe needs `--seeds` ≥ 3."
)


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _si(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _interval(d: Mapping[str, Any] | None, spec: str = ".4f") -> str:
    if not d or d.get("low") is None or not math.isfinite(d["low"]):
        return "–"
    return f"[{format(d['low'], spec)}, {format(d['high'], spec)}]"


def _p(value: Any, n_boot: int) -> str:
    if value is None:
        return "–"
    if value == 0:
        return f"< {2 / n_boot:.3g}"
    return f"{value:.3f}"


def format_stats(report: Mapping[str, Any]) -> str:
    """The main table: light AUC over seeds and the paired Δ vs light_alone."""
    rows = report["rows"]
    n_seeds = len(report["seeds"])
    n_boot = report["bootstrap"]["n_boot"]
    lines = [
        f"| variant | settings | light AUC (mean of {n_seeds}) | 95% CI over seeds (t) | "
        "95% CI (bootstrap) | Δ vs light_alone [95% CI] | p | booster AUC | gap closed | "
        "representable teacher AUC | gap closed (representable) |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        light, delta, booster = r["light_auc"], r["delta_vs_light_alone"], r["booster_auc"]
        gap = r.get("gap_closed_auc")
        rep, rep_gap = r.get("representable_auc"), r.get("gap_closed_representable")
        cells = [
            r["variant"],
            r.get("settings") or "–",
            _fmt(light["mean"]) if light else "–",
            _interval(light),
            _interval(r["light_auc_bootstrap"]),
            describe_gain(delta["mean"], delta["low"], delta["high"]) if delta else "–",
            _p(delta["p_value_two_sided"], n_boot) if delta else "–",
            _fmt(booster["mean"]) if booster else "–",
            _percent(gap),
            _fmt(rep["mean"]) if rep else "–",
            _percent(rep_gap),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Test split; seeds {report['seeds']} (model init and data order, data fixed). "
        "Δ is the paired difference to light_alone on the same test rows (seed s with seed s); "
        f"its interval is a hierarchical bootstrap ({n_boot} replicates) over test requests "
        "with the seeds resampled, and p its two-sided bootstrap p-value. gap closed = "
        "(AUC(light) − AUC(light_alone)) / (AUC(its booster) − AUC(light_alone)) from the "
        "mean AUCs, `–` when that booster is not better than light_alone. The representable "
        "teacher is the same booster scored with position fixed at its most frequent train "
        "value and every privileged cross feature at its train-time (user, category / shop) "
        "mean: what a function of (user, item) could learn from it; gap closed "
        "(representable) is the same ratio against it."
    )
    if n_seeds == 1:
        lines.append("")
        lines.append(ONE_SEED_NOTE)
    return "\n".join(lines) + "\n"


def format_runs(rows: Sequence[Mapping[str, Any]]) -> str:
    """The secondary table: seed means of every run's test metrics, cost and time."""
    booster_cpu = next(
        (r.get("train_cpu_seconds") for r in rows if r["variant"] == "booster_alone"), None
    )
    lines = [
        "| variant | light AUC | GAUC | logloss | NDCG@10 | MAP@5 | calib. | calib. after "
        "calibration | booster AUC | best epochs | train s | CPU s | × booster_alone (CPU) | "
        "light params | light FLOPs/cand | booster params | booster FLOPs/cand |",
        "|" + "---|" * 17,
    ]
    for r in rows:
        light = r["light"] or {}
        booster = r["booster"] or {}
        cpu = r.get("train_cpu_seconds")
        ratio = cpu / booster_cpu if cpu is not None and booster_cpu else None
        epochs = [run.get("best_epoch") for run in r.get("runs", [])]
        cells = [
            r["variant"],
            _fmt(light.get("auc")),
            _fmt(light.get("gauc")),
            _fmt(light.get("logloss")),
            _fmt(light.get("ndcg@10")),
            _fmt(light.get("map@5")),
            _fmt(light.get("calibration"), ".3f"),
            _fmt(r.get("light_calibration_after"), ".3f"),
            _fmt(booster.get("auc")),
            ", ".join("–" if e is None else str(e) for e in epochs) or "–",
            _fmt(r.get("train_seconds"), ".1f"),
            _fmt(cpu, ".1f"),
            _fmt(ratio, ".2f"),
            _si(r["params"]["light"]),
            _si(r["flops_per_candidate"]["light"]),
            _si(r["params"]["booster"]),
            _si(r["flops_per_candidate"]["booster"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Means over seeds of each run's metrics.json (test split); `–` = not applicable (that "
        "net was not trained). calib. = mean predicted probability / label rate; after "
        "calibration: Platt's slope fitted on valid, the intercept anchored to the train ∪ valid "
        "label rate when the two agree (`light_calibrated` in metrics.json). "
        "best epochs: the early-stopping epoch of each seed. Times are "
        "the optimiser steps only (no evaluation); two_stage_kd includes training its booster. "
        "The ratio uses CPU seconds (one torch thread), which other processes on a shared "
        "machine inflate far less than wall seconds."
    )
    return "\n".join(lines) + "\n"


def format_tuning(tuning: Mapping[str, Any]) -> str:
    """Chosen values per variant, then every trial's validation AUC."""
    lines = [
        f"Every variant got {tuning['budget']} trials ({tuning['sampler']}), chosen on the "
        f"{tuning['selected_on']}; test was read once, by the seed runs with the chosen values. "
        "Trial 0 is the untuned setting when it lies inside the search space.",
        "",
        "| variant | knobs | chosen (trial) | valid AUC |",
        "|---|---|---|---|",
    ]
    for name, t in tuning["variants"].items():
        chosen = ", ".join(f"{k}={_g(v)}" for k, v in t["chosen"].items())
        lines.append(
            f"| {name} | {', '.join(t['knobs'])} | {chosen} (#{t['chosen_trial']}) | "
            f"{_fmt(t['chosen_valid_auc'])} |"
        )
    lines.append("")
    lines.append("| variant | trial | values | valid AUC | state |")
    lines.append("|---|---|---|---|---|")
    for name, t in tuning["variants"].items():
        for trial in t["trials"]:
            values = ", ".join(f"{k}={_g(v)}" for k, v in trial["params"].items())
            state = trial["state"] if len(trial["state"]) < 60 else trial["state"][:57] + "..."
            lines.append(
                f"| {name} | {trial['number']} | {values} | {_fmt(trial['valid_auc'])} | {state} |"
            )
    return "\n".join(lines) + "\n"


def _g(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: header, the statistics table, the run table and the tuning."""
    lines = ["# Ablation report", ""]
    lines.extend(f"- {k}: {v}" for k, v in (report.get("header") or {}).items())
    lines += ["", "## Light-net test AUC and the paired gain over light_alone", ""]
    lines.append(format_stats(report))
    lines += ["## Per-run metrics (means over seeds)", ""]
    lines.append(format_runs(report["rows"]))
    if report.get("variant_overrides"):
        lines += ["## Per-variant overrides (--variant-config)", ""]
        lines.extend(f"- {v}: `{json.dumps(o)}`" for v, o in report["variant_overrides"].items())
        lines.append("")
    if report.get("tuning"):
        lines += ["## Tuning (validation split only)", ""]
        lines.append(format_tuning(report["tuning"]))
    return "\n".join(lines)


def _header(report: Mapping[str, Any], cfg: RunConfig, data: PreparedData) -> dict[str, str]:
    seeds = report["seeds"]
    epochs = sorted({c["optim"]["epochs"] for c in report.get("configs", {}).values()})
    return {
        "task": f"{cfg.task} (label `{data.label}`), stage {cfg.stage}",
        "data": f"{data.data_dir} — train {len(data.train):,} rows, "
        f"test {len(data.test) if data.test is not None else 0:,} rows",
        "light net": f"{cfg.model.light} {list(cfg.model.light_dims)}",
        "booster": f"{cfg.model.booster} {list(cfg.model.booster_dims)}",
        "privileged": ", ".join(privileged_features(cfg, data)) or "none",
        "seeds": f"{len(seeds)} ({', '.join(map(str, seeds))})",
        "epochs / batch": f"{'/'.join(map(str, epochs)) or cfg.optim.epochs} / "
        f"{cfg.data.batch_size}",
        "tuning": "none (the configs' values)"
        if not report.get("tuning")
        else f"{report['tuning']['budget']} trials per variant, {report['tuning']['sampler']}",
    }


def write_report(
    report: dict[str, Any], out_dir: Path, cfg: RunConfig, data: PreparedData
) -> dict[str, Any]:
    """Add the header, then write ``report.json``, ``report.md`` and ``report.png``."""
    report = {"header": _header(report, cfg, data), **report}
    safe = json_safe(report)
    atomic_write_text(out_dir / "report.json", json.dumps(safe, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", format_markdown(safe))
    plot_ablation(
        safe["rows"],
        out_dir / "report.png",
        title=f"{cfg.task}, {cfg.stage}, {len(report['seeds'])} seed(s)",
    )
    return safe


__all__ = [
    "ONE_SEED_NOTE",
    "format_markdown",
    "format_runs",
    "format_stats",
    "format_tuning",
    "write_report",
]
