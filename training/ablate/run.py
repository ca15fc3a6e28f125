"""Ablation: every distillation variant on the same data, seed and epochs, one report.

Variants, in report order (the baselines first, then the distilled students):

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
``training.ablate.variants``).

Outputs in ``DIR``: one run directory per variant (``DIR/<variant>/``, the
trainer's layout), ``report.json`` (a list of rows), ``report.md`` and
``report.png``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.ablate.report import add_gap_closed, write_report
from training.ablate.variants import VARIANTS, applicable_variants, variant_config
from training.config import RunConfig
from training.data.prepare import PreparedData
from training.distill import Variant
from training.loop.build import load_trained_model
from training.loop.run_files import METRICS_FILE
from training.loop.trainer import TrainingError, TrainOptions, train


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


__all__ = ["run_ablation"]
