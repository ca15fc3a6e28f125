"""The ablation report: gap closed per variant, ``report.json``, ``report.md``, ``report.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.provenance import json_safe
from training.ablate.variants import privileged_features
from training.config import RunConfig
from training.data.prepare import PreparedData
from training.distill import Variant
from training.evaluate import gap_closed
from training.loop.checkpoint import atomic_write_text
from training.loop.trainer import TrainOptions
from training.plots import plot_ablation


def add_gap_closed(rows: Sequence[dict[str, Any]]) -> None:
    """Set ``gap_closed_auc`` of every distilled row against the ``light_alone`` row.

    The booster of a row is the teacher it learnt from (its own, or the frozen
    one of two-stage KD). A teacher no better than the baseline leaves no gap
    to close (the ratio of two negative differences would read as success), so
    such rows, and the two baselines, get None.
    """
    by = {r["variant"]: r for r in rows}
    base = by.get(Variant.LIGHT_ALONE.value)
    for row in rows:
        row["gap_closed_auc"] = None
        if base is None or row["variant"] in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE):
            continue
        base_auc = base["light"]["auc"]
        teacher_auc = (row["booster"] or {}).get("auc", math.nan)
        if teacher_auc > base_auc:
            row["gap_closed_auc"] = gap_closed(row["light"]["auc"], base_auc, teacher_auc)


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


def format_markdown(rows: Sequence[dict[str, Any]], header: dict[str, Any] | None = None) -> str:
    """The report as a Markdown table (test split; light-net metrics unless marked)."""
    by = {r["variant"]: r for r in rows}
    base_auc = (by.get("light_alone", {}).get("light") or {}).get("auc")
    booster_cpu = by.get("booster_alone", {}).get("train_cpu_seconds")
    lines = []
    if header:
        lines.append("# Ablation report\n")
        lines.extend(f"- {k}: {v}" for k, v in header.items())
        lines.append("")
    lines.append(
        "| variant | light AUC | Δ vs light_alone | GAUC | logloss | NDCG@10 | MAP@5 | calib. "
        "| booster AUC | gap closed | train s | CPU s | × booster_alone (CPU) | light params | "
        "light FLOPs/cand | booster params | booster FLOPs/cand |"
    )
    lines.append("|" + "---|" * 17)
    for r in rows:
        light = r["light"] or {}
        booster = r["booster"] or {}
        delta = (
            light["auc"] - base_auc
            if light.get("auc") is not None and base_auc is not None
            else None
        )
        cpu = r.get("train_cpu_seconds")
        ratio = cpu / booster_cpu if cpu is not None and booster_cpu else None
        gap = r.get("gap_closed_auc")
        cells = [
            r["variant"],
            _fmt(light.get("auc")),
            _fmt(delta, "+.4f"),
            _fmt(light.get("gauc")),
            _fmt(light.get("logloss")),
            _fmt(light.get("ndcg@10")),
            _fmt(light.get("map@5")),
            _fmt(light.get("calibration"), ".3f"),
            _fmt(booster.get("auc")),
            _fmt(gap * 100 if gap is not None else None, ".1f") + ("%" if gap is not None else ""),
            _fmt(r["train_seconds"], ".1f"),
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
        "Light-net metrics on the test split; `–` = not applicable (that net was not "
        "trained). gap closed = (AUC(light) − AUC(light_alone)) / (AUC(its booster) − "
        "AUC(light_alone)), `–` when that booster is not better than light_alone. Times "
        "are the optimiser steps only (no evaluation); two_stage_kd includes training its "
        "booster. The ratio uses CPU seconds (one torch thread), which "
        "other processes on a shared machine inflate far less than wall seconds."
    )
    return "\n".join(lines) + "\n"


def write_report(
    rows: Sequence[dict[str, Any]],
    out_dir: Path,
    cfg: RunConfig,
    data: PreparedData,
    options: TrainOptions,
) -> None:
    """``report.json`` (rows), ``report.md`` and ``report.png`` in ``out_dir``."""
    safe_rows = json_safe(list(rows))
    atomic_write_text(out_dir / "report.json", json.dumps(safe_rows, indent=2) + "\n")
    header = {
        "task": f"{cfg.task} (label `{data.label}`), stage {cfg.stage}",
        "data": f"{data.data_dir} — train {len(data.train):,} rows, "
        f"test {len(data.test) if data.test is not None else 0:,} rows",
        "light net": f"{cfg.model.light} {list(cfg.model.light_dims)}",
        "booster": f"{cfg.model.booster} {list(cfg.model.booster_dims)}",
        "privileged": ", ".join(privileged_features(cfg, data)) or "none",
        "seed / epochs / batch": f"{cfg.seed} / {options.epochs or cfg.optim.epochs} / "
        f"{cfg.data.batch_size}",
    }
    atomic_write_text(out_dir / "report.md", format_markdown(safe_rows, header))
    plot_ablation(safe_rows, out_dir / "report.png", title=f"({cfg.task}, {cfg.stage})")


__all__ = ["add_gap_closed", "format_markdown", "write_report"]
