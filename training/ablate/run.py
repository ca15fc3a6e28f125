"""Ablation: every distillation variant on the same data, seed and epochs, one report.

Variants (``DESIGN.md``, "Baselines"), in report order:

* ``light_alone`` — the student trained on labels only (the baseline);
* ``booster_alone`` — the teacher trained on labels only;
* ``two_stage_kd`` — the ``booster_alone`` teacher, frozen, then a fresh
  student on its soft labels; its train time counts both stages;
* ``rocket`` / ``rocket_no_gradient_block`` — joint training with shared
  embeddings, with and without the gradient block;
* ``pfd`` — privileged features, teacher of the student's size (an MLP with the
  light net's widths), so the gain comes from the features alone;
* ``pfd_md`` — privileged features and the config's larger booster.

The PFD variants run only when the task (as the light net sees it) has
privileged features. Hint, λ and schedule come from the config for variants of
its family (Rocket or PFD) and are the variant's defaults otherwise (see
``training.loop.trainer.with_variant``).

Outputs in ``DIR``: one run directory per variant (``DIR/<variant>/``, the
trainer's layout), ``report.json`` (a list of rows), ``report.md`` and
``report.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from models.provenance import json_safe
from training.ablate.variants import with_variant
from training.config import RunConfig, model_args
from training.data.prepare import PreparedData
from training.distill import Variant
from training.evaluate import gap_closed
from training.loop.build import load_trained_model
from training.loop.checkpoint import atomic_write_text
from training.loop.run_files import METRICS_FILE
from training.loop.trainer import TrainingError, TrainOptions, train
from training.plots import plot_ablation

VARIANTS: tuple[Variant, ...] = (
    Variant.LIGHT_ALONE,
    Variant.BOOSTER_ALONE,
    Variant.TWO_STAGE_KD,
    Variant.ROCKET,
    Variant.ROCKET_NO_GRADIENT_BLOCK,
    Variant.PFD,
    Variant.PFD_MD,
)
PRIVILEGED_ONLY = frozenset({Variant.PFD, Variant.PFD_MD})
JOINT = frozenset({Variant.ROCKET, Variant.ROCKET_NO_GRADIENT_BLOCK, Variant.PFD, Variant.PFD_MD})


def privileged_features(cfg: RunConfig, data: PreparedData) -> list[str]:
    """Features only the booster reads for this config (task + light-net kind)."""
    args = model_args(cfg, data.dataset.schema, data.dataset.encoder.cardinality)
    return list(args.privileged)


def applicable_variants(cfg: RunConfig, data: PreparedData) -> list[Variant]:
    """Every variant of :data:`VARIANTS` that applies to this config and data."""
    has_privileged = bool(privileged_features(cfg, data))
    return [v for v in VARIANTS if v not in PRIVILEGED_ONLY or has_privileged]


def variant_config(cfg: RunConfig, variant: Variant) -> RunConfig:
    """The run config of one variant (see the module docstring)."""
    out = with_variant(cfg, variant)
    if variant is Variant.PFD:
        # PFD without model distillation: the teacher has the student's capacity
        model = dataclasses.replace(
            out.model, booster="mlp", booster_dims=tuple(cfg.model.light_dims)
        )
        out = dataclasses.replace(out, model=model)
    return out


def _row(
    variant: Variant, metrics: dict[str, Any], seconds: float, cpu_seconds: float
) -> dict[str, Any]:
    trained_light = variant is not Variant.BOOSTER_ALONE
    trained_booster = variant is not Variant.LIGHT_ALONE
    return {
        "variant": variant.value,
        "light": metrics["light"] if trained_light else None,
        "booster": metrics["booster"] if trained_booster else None,
        "gap_closed_auc": None,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "params": metrics["params"],
        "flops_per_candidate": metrics["flops_per_candidate"],
        "light_serving_flops_per_candidate": metrics.get("light_serving_flops_per_candidate"),
        "samples_per_second": metrics.get("samples_per_second"),
        "best_epoch": metrics.get("best_epoch"),
    }


def _finished(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def run_ablation(
    cfg: RunConfig,
    data: PreparedData,
    out_dir: str | Path,
    options: TrainOptions | None = None,
    variants: Iterable[Variant | str] | None = None,
    *,
    reuse_finished: bool = False,
) -> list[dict[str, Any]]:
    """Train the variants and write the report.

    Args:
        cfg: the base run config (its variant is ignored; every variant is trained).
        data: encoded once, reused by every variant.
        out_dir: report directory; each variant trains in ``out_dir/<variant>``.
        options: loop options shared by every variant (epochs, threads, ...).
        variants: a subset to train (default: every applicable variant).
            ``two_stage_kd`` also trains ``booster_alone`` (its teacher) if needed.
        reuse_finished: keep variants whose run directory already has
            ``metrics.json`` instead of training them again.

    Returns:
        The report rows (also written to ``report.json``).

    Raises:
        TrainingError: a requested variant does not apply (e.g. PFD without
            privileged features).
    """
    options = options or TrainOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    applicable = applicable_variants(cfg, data)
    if variants is None:
        wanted = applicable
    else:
        wanted = [Variant(v) for v in variants]
        bad = [v.value for v in wanted if v not in applicable]
        if bad:
            raise TrainingError(
                f"variant(s) {bad} do not apply: task {cfg.task!r} has no privileged features "
                "for this light net"
            )
    to_train = [v for v in VARIANTS if v in wanted]
    if Variant.TWO_STAGE_KD in to_train and Variant.BOOSTER_ALONE not in to_train:
        to_train.insert(to_train.index(Variant.TWO_STAGE_KD), Variant.BOOSTER_ALONE)

    results: dict[Variant, dict[str, Any]] = {}
    for variant in to_train:
        run_dir = out_dir / variant.value
        metrics = _finished(run_dir) if reuse_finished else None
        if metrics is None:
            teacher = None
            if variant is Variant.TWO_STAGE_KD:
                teacher = load_trained_model(out_dir / Variant.BOOSTER_ALONE.value)
            started = time.perf_counter()
            metrics = train(
                variant_config(cfg, variant), data, run_dir, options, teacher=teacher
            ).metrics
            metrics["wall_seconds"] = time.perf_counter() - started
        seconds = float(metrics["train_seconds"])
        cpu_seconds = float(metrics.get("train_cpu_seconds", math.nan))
        if variant is Variant.TWO_STAGE_KD:
            seconds += results[Variant.BOOSTER_ALONE]["train_seconds"]
            cpu_seconds += results[Variant.BOOSTER_ALONE]["train_cpu_seconds"]
        results[variant] = _row(variant, metrics, seconds, cpu_seconds)

    add_gap_closed(list(results.values()))
    rows = [results[v] for v in VARIANTS if v in wanted]
    write_report(rows, out_dir, cfg, data, options)
    return rows


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


# --------------------------------------------------------------------------- report


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


__all__ = [
    "JOINT",
    "VARIANTS",
    "add_gap_closed",
    "applicable_variants",
    "format_markdown",
    "privileged_features",
    "run_ablation",
    "variant_config",
    "write_report",
]
