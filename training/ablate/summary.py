"""The numbers of the ablation report, computed from every run's stored test scores.

For each variant, over the seeds ``s = 0..S-1`` (model init and data order;
the data fixed), from ``test_scores.npz`` of each run:

* ``light_auc`` — mean ± Student-t 95% interval of the per-seed test AUC
  (:func:`training.ablate.t_interval.mean_ci`; no interval with one seed);
* ``light_auc_bootstrap`` — the hierarchical bootstrap interval of the same
  mean (:func:`~training.ablate.stats.auc_interval`: requests and seeds
  resampled; with one seed it covers test sampling only);
* ``delta_vs_light_alone`` — the paired difference to ``light_alone`` on the
  same test rows (:func:`~training.ablate.stats.paired_difference`: seed s of
  the variant paired with seed s of the baseline, requests — the ``group``
  column — resampled with the same draws for both, seeds resampled) with its
  interval and two-sided p-value;
* ``booster_auc`` — mean ± t interval of the teacher's test AUC;
* ``gap_closed_auc`` — from the mean AUCs: (light − light_alone) /
  (booster − light_alone), None when the teacher is not better than the baseline;
* ``representable_auc`` — mean ± t interval of the test AUC of the run's
  *representable teacher* (its booster with position fixed and the privileged
  cross features at their train-time pair means, ``training.ablate.representable``),
  None when the runs have none; ``gap_closed_representable`` — the same ratio as
  ``gap_closed_auc`` against that teacher: the share of what a (user, item)
  student could learn from it.

Every variant uses the same bootstrap seed, so every variant's interval sees
the same request resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.ablate.auc import weighted_auc
from training.ablate.representable import gap_closed_against
from training.ablate.runs import RunOutcome
from training.ablate.stats import auc_interval, paired_difference
from training.ablate.t_interval import mean_ci
from training.distill.rules import Variant
from training.evaluate import gap_closed

LEVEL = 0.95


def run_row(variant: Variant, seed: int, outcome: RunOutcome) -> dict[str, Any]:
    """One run's line of ``report.json``: its ``metrics.json`` numbers (test split)."""
    metrics = outcome.metrics
    trained_light = variant is not Variant.BOOSTER_ALONE
    trained_booster = variant is not Variant.LIGHT_ALONE
    return {
        "seed": seed,
        "light": metrics["light"] if trained_light else None,
        "booster": metrics["booster"] if trained_booster else None,
        "train_seconds": float(metrics["train_seconds"]),
        "train_cpu_seconds": float(metrics.get("train_cpu_seconds", math.nan)),
        "params": metrics["params"],
        "flops_per_candidate": metrics["flops_per_candidate"],
        "light_serving_flops_per_candidate": metrics.get("light_serving_flops_per_candidate"),
        "samples_per_second": metrics.get("samples_per_second"),
        "best_epoch": metrics.get("best_epoch"),
        "light_calibration_after": ((metrics.get("light_calibrated") or {}).get("after") or {}).get(
            "calibration"
        )
        if trained_light
        else None,
        "epochs": metrics.get("epochs"),
        "reused": outcome.reused,
    }


def _mean_metrics(dicts: Sequence[Mapping[str, Any] | None]) -> dict[str, float] | None:
    present = [d for d in dicts if d]
    if not present:
        return None
    out = {}
    for key in present[0]:
        values = [d.get(key) for d in present]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = float(np.mean(values))
    return out


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _representable_auc(label: np.ndarray, runs: Sequence[RunOutcome]) -> dict[str, Any] | None:
    """Mean ± t interval of the representable teacher's test AUC; None when a run has none."""
    rep = [o.scores.representable for o in runs]
    if not rep or any(z is None for z in rep):
        return None
    return mean_ci([weighted_auc(label, z) for z in rep], LEVEL).to_dict()


def _add_teacher_time(per_seed: list[dict[str, Any]], teachers: Sequence[RunOutcome]) -> None:
    """Two-stage KD pays for its teacher: add booster_alone's times seed by seed."""
    for row, teacher in zip(per_seed, teachers):
        row["train_seconds"] += float(teacher.metrics["train_seconds"])
        row["train_cpu_seconds"] += float(teacher.metrics.get("train_cpu_seconds", math.nan))


def _set_gaps(row: dict[str, Any], base_mean: float) -> None:
    """``gap_closed_auc`` (booster) and ``gap_closed_representable`` of a distilled row."""
    light_mean, teacher_mean = row["light_auc"]["mean"], row["booster_auc"]["mean"]
    if teacher_mean > base_mean:
        row["gap_closed_auc"] = gap_closed(light_mean, base_mean, teacher_mean)
    if row["representable_auc"] is not None:
        rep_mean = row["representable_auc"]["mean"]
        row["gap_closed_representable"] = gap_closed_against(light_mean, base_mean, rep_mean)


def summarise(
    outcomes: Mapping[Variant, Sequence[RunOutcome]],
    seeds: Sequence[int],
    settings: Mapping[Variant, str],
    *,
    n_boot: int = 1000,
    bootstrap_seed: int = 0,
) -> list[dict[str, Any]]:
    """The report rows, in the order of ``outcomes``.

    Args:
        outcomes: per variant, one :class:`RunOutcome` per seed (same order as
            ``seeds``), each with its test scores. A two-stage KD row's train
            time includes its ``booster_alone`` teacher of the same seed when
            that variant is present.
        seeds: the run seeds (``cfg.seed`` of each run).
        settings: a one-line description of each variant's distillation settings.
        n_boot: bootstrap replicates.
        bootstrap_seed: seeds every bootstrap (the same request draws for every variant).
    """
    first = next(iter(outcomes.values()))
    label = first[0].scores.label
    group = first[0].scores.group
    base = outcomes.get(Variant.LIGHT_ALONE)
    base_light = [o.scores.light for o in base] if base else None
    rows: list[dict[str, Any]] = []
    for variant, runs in outcomes.items():
        per_seed = [run_row(variant, s, o) for s, o in zip(seeds, runs)]
        if variant is Variant.TWO_STAGE_KD and Variant.BOOSTER_ALONE in outcomes:
            _add_teacher_time(per_seed, outcomes[Variant.BOOSTER_ALONE])
        light = [o.scores.light for o in runs]
        booster = [o.scores.booster for o in runs]
        row: dict[str, Any] = {
            "variant": variant.value,
            "settings": settings.get(variant, ""),
            "seeds": list(seeds),
            "light_auc": None,
            "light_auc_bootstrap": None,
            "booster_auc": None,
            "delta_vs_light_alone": None,
            "gap_closed_auc": None,
            "representable_auc": None,
            "gap_closed_representable": None,
        }
        if variant is not Variant.LIGHT_ALONE:
            row["representable_auc"] = _representable_auc(label, runs)
        if variant is not Variant.BOOSTER_ALONE:
            row["light_auc"] = mean_ci([weighted_auc(label, z) for z in light], LEVEL).to_dict()
            row["light_auc_bootstrap"] = auc_interval(
                label, group, light, n_boot=n_boot, seed=bootstrap_seed, level=LEVEL
            ).to_dict()
        if variant is not Variant.LIGHT_ALONE:
            row["booster_auc"] = mean_ci([weighted_auc(label, z) for z in booster], LEVEL).to_dict()
        if base_light is not None and variant not in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE):
            row["delta_vs_light_alone"] = paired_difference(
                label, group, base_light, light, n_boot=n_boot, seed=bootstrap_seed, level=LEVEL
            ).to_dict()
            _set_gaps(row, float(np.mean([weighted_auc(label, z) for z in base_light])))
        row.update(
            light=_mean_metrics([r["light"] for r in per_seed]),
            booster=_mean_metrics([r["booster"] for r in per_seed]),
            light_calibration_after=_mean([r["light_calibration_after"] for r in per_seed]),
            train_seconds=_mean([r["train_seconds"] for r in per_seed]),
            train_cpu_seconds=_mean([r["train_cpu_seconds"] for r in per_seed]),
            params=per_seed[0]["params"],
            flops_per_candidate=per_seed[0]["flops_per_candidate"],
            light_serving_flops_per_candidate=per_seed[0]["light_serving_flops_per_candidate"],
            samples_per_second=_mean([r["samples_per_second"] for r in per_seed]),
            runs=per_seed,
        )
        rows.append(row)
    return rows


__all__ = ["LEVEL", "run_row", "summarise"]
