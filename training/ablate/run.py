"""Ablation: every distillation variant on the same data, over seeds, one report.

Variants, in report order (the baselines first, then the distilled students):

* ``light_alone`` — the student trained on labels only (the baseline);
* ``booster_alone`` — the teacher trained on labels only;
* ``two_stage_kd`` — the ``booster_alone`` teacher of the same seed, frozen,
  then a fresh student on its soft labels; its train time counts both stages;
* ``rocket`` / ``rocket_no_gradient_block`` — joint training with shared
  embeddings, with and without the gradient block;
* ``pfd`` — privileged features, teacher of the student's size (an MLP with the
  light net's widths), so the gain comes from the features alone;
* ``pfd_md`` — privileged features and the config's larger booster.

The PFD variants run only when the task (as the light net sees it) has
privileged features. Every distilled variant takes the config's distillation
settings where they apply, plus per-variant overrides
(``training.ablate.variants``); with a tuning budget every variant first
searches its own knobs on validation (``training.ablate.tune``).

Seeds: run ``s`` of ``seeds`` trains with ``cfg.seed = base + s`` (model init
and data order; the data stay fixed). After training, each run's nets score the
test split (``test_scores.npz``); the report's intervals and paired differences
come from those scores (``training.ablate.summary``).

Outputs in ``DIR``: ``DIR/<variant>/seed<s>/`` (the trainer's run layout plus
``test_scores.npz``), ``DIR/tune/<variant>/trial<k>/`` when tuning,
``report.json``, ``report.md`` and ``report.png`` (``training.ablate.report``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from training.ablate.report import write_report
from training.ablate.representable import representable_features
from training.ablate.runs import RunOutcome, run_one
from training.ablate.summary import LEVEL, summarise
from training.ablate.tune import TuneResult, sampler_name, trial_runner, tune_variant
from training.ablate.variants import (
    VARIANTS,
    Overrides,
    applicable_variants,
    apply_overrides,
    describe_settings,
    privileged_features,
    variant_config,
)
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.rules import Variant
from training.loop.errors import TrainingError
from training.loop.options import TrainOptions

log = logging.getLogger(__name__)


def run_dir_of(out_dir: Path, variant: Variant, seed_index: int) -> Path:
    """Where run ``seed_index`` of ``variant`` trains."""
    return out_dir / variant.value / f"seed{seed_index}"


def _plan(cfg: RunConfig, data: PreparedData, variants: Iterable[Variant | str] | None):
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
    return [v for v in VARIANTS if v in wanted], to_train


def tune_variants(
    configs: Mapping[Variant, RunConfig],
    data: PreparedData,
    out_dir: Path,
    options: TrainOptions,
    budget: int,
    *,
    seed: int = 0,
    reuse: bool = False,
) -> dict[Variant, TuneResult]:
    """``budget`` validation-only trials for every variant of ``configs`` (in order).

    ``two_stage_kd``'s trials distil the booster of ``booster_alone``'s chosen
    trial, so ``booster_alone`` must come first in ``configs``.
    """
    results: dict[Variant, TuneResult] = {}
    for variant, cfg in configs.items():
        teacher_dir = None
        if variant is Variant.TWO_STAGE_KD:
            teacher_dir = Path(results[Variant.BOOSTER_ALONE].best.run_dir)
        runner = trial_runner(data, options, teacher_dir=teacher_dir, reuse=reuse)
        results[variant] = tune_variant(
            cfg,
            budget,
            runner,
            out_dir / variant.value,
            seed=seed,
            steps_per_epoch=data.train.num_batches(cfg.data.batch_size),
        )
    return results


def _epochs_into_config(cfg: RunConfig, options: TrainOptions) -> tuple[RunConfig, TrainOptions]:
    """Moves ``options.epochs`` into ``cfg.optim.epochs`` (so tuning and overrides can set it)."""
    if options.epochs:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=options.epochs))
        options = dataclasses.replace(options, epochs=None)
    return cfg, options


def _tuned_configs(
    configs: Mapping[Variant, RunConfig],
    data: PreparedData,
    out_dir: Path,
    options: TrainOptions,
    budget: int,
    *,
    seed: int,
    reuse: bool,
) -> tuple[dict[Variant, RunConfig], dict[Variant, TuneResult]]:
    """Tunes every variant of ``configs`` and applies each one's chosen values to its config."""
    tuning = tune_variants(configs, data, out_dir, options, budget, seed=seed, reuse=reuse)
    tuned = {
        v: apply_overrides(c, tuning[v].overrides, f"tuned values of {v.value}")
        for v, c in configs.items()
    }
    return tuned, tuning


def _train_seeds(
    configs: Mapping[Variant, RunConfig],
    to_train: Sequence[Variant],
    data: PreparedData,
    out_dir: Path,
    options: TrainOptions,
    seed_values: Sequence[int],
    reuse: bool,
) -> dict[Variant, list[RunOutcome]]:
    """Trains and scores every variant of ``to_train`` at every seed, seed by seed.

    ``two_stage_kd`` of seed ``s`` distils ``booster_alone``'s run of the same seed.
    Every run with a trained booster also scores the representable teacher
    (features computed once, :func:`representable_test_features`).
    """
    outcomes: dict[Variant, list[RunOutcome]] = {v: [] for v in to_train}
    representable = representable_test_features(next(iter(configs.values())), data)
    for s, seed in enumerate(seed_values):
        for variant in to_train:
            teacher_dir = None
            if variant is Variant.TWO_STAGE_KD:
                teacher_dir = run_dir_of(out_dir, Variant.BOOSTER_ALONE, s)
            outcomes[variant].append(
                run_one(
                    dataclasses.replace(configs[variant], seed=seed),
                    data,
                    run_dir_of(out_dir, variant, s),
                    options,
                    teacher_dir=teacher_dir,
                    reuse=reuse,
                    representable=None if variant is Variant.LIGHT_ALONE else representable,
                )
            )
    return outcomes


def representable_test_features(cfg: RunConfig, data: PreparedData) -> dict[str, Tensor] | None:
    """The test features of the representable teacher, or None where there is none.

    None when the task has no privileged features (the booster reads what the
    light net reads) or when the schema's cross features have no item-side key
    to average over (a warning says so; the report then shows no such column).
    """
    privileged = privileged_features(cfg, data)
    if not privileged or data.test is None:
        return None
    try:
        return representable_features(
            data.test,
            data.train,
            data.dataset.encoder,
            privileged,
            item_id=data.dataset.schema.ids.item,
        )
    except ValueError as exc:
        log.warning("no representable teacher for this log: %s", exc)
        return None


def _summary_rows(
    outcomes: Mapping[Variant, list[RunOutcome]],
    to_train: Sequence[Variant],
    wanted: Sequence[Variant],
    seed_values: Sequence[int],
    configs: Mapping[Variant, RunConfig],
    *,
    n_boot: int,
    bootstrap_seed: int,
) -> list[dict[str, Any]]:
    """The report's rows: one per variant asked for, from every trained variant's runs."""
    # two-stage KD's row counts its teacher's training time, so keep booster_alone's
    # runs even when only two_stage_kd was asked for; the row itself is left out
    summary_input = {v: outcomes[v] for v in to_train}
    rows = summarise(
        summary_input,
        seed_values,
        {v: describe_settings(c) for v, c in configs.items()},
        n_boot=n_boot,
        bootstrap_seed=bootstrap_seed,
    )
    return [r for r in rows if Variant(r["variant"]) in wanted]


def _bootstrap_section(n_boot: int, bootstrap_seed: int, seeds: int) -> dict[str, Any]:
    """The report's ``bootstrap`` entry: how every interval was resampled."""
    return {
        "n_boot": n_boot,
        "seed": bootstrap_seed,
        "level": LEVEL,
        "unit": "test request (the split's group column)",
        "seeds_resampled": seeds > 1,
    }


def _tuning_section(tuning: Mapping[Variant, TuneResult], budget: int) -> dict[str, Any] | None:
    """The report's ``tuning`` entry; None without tuning."""
    if not tuning:
        return None
    return {
        "budget": budget,
        "sampler": sampler_name(),
        "selected_on": "validation AUC of the trained net (light; booster for booster_alone)",
        "variants": {v.value: t.to_dict() for v, t in tuning.items()},
    }


def run_ablation(
    cfg: RunConfig,
    data: PreparedData,
    out_dir: str | Path,
    options: TrainOptions | None = None,
    variants: Iterable[Variant | str] | None = None,
    *,
    seeds: int = 1,
    reuse_finished: bool = False,
    overrides: Mapping[Variant, Overrides] | None = None,
    tune_budget: int = 0,
    n_boot: int = 1000,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Tune (optionally), train every variant at every seed, score test, write the report.

    Args:
        cfg: the base run config (its variant only shapes the others' settings,
            see ``training.ablate.variants``); ``cfg.seed`` is the first seed.
        data: encoded once, reused by every run.
        out_dir: report directory (layout in the module docstring).
        options: loop options shared by every run; ``options.epochs`` is written
            into each config's ``optim.epochs`` (so tuning and overrides can set it).
        variants: a subset to train (default: every applicable variant).
            ``two_stage_kd`` also trains ``booster_alone`` (its teacher) if needed.
        seeds: runs per variant, at seeds ``cfg.seed + s`` for ``s < seeds``.
        reuse_finished: keep runs (and tuning trials) whose directory already has
            ``metrics.json`` from the same config; refuse those from another.
        overrides: per-variant ``{section: {key: value}}``, applied last
            (``--variant-config``).
        tune_budget: trials per variant (0 = no tuning).
        n_boot: bootstrap replicates of every interval.
        bootstrap_seed: seeds the bootstrap.

    Returns:
        The report (also written to ``report.json``).

    Raises:
        TrainingError: a requested variant does not apply, no test split, a
            refused reuse, or a failed run.
    """
    if seeds < 1:
        raise TrainingError(f"--seeds must be ≥ 1, got {seeds}")
    cfg, options = _epochs_into_config(cfg, options or TrainOptions())
    if data.test is None or not len(data.test):
        raise TrainingError("the ablation needs a test split (test.parquet) to compare variants on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    wanted, to_train = _plan(cfg, data, variants)
    configs = {v: variant_config(cfg, v, overrides.get(v)) for v in to_train}

    tuning: dict[Variant, TuneResult] = {}
    if tune_budget:
        configs, tuning = _tuned_configs(
            configs, data, out_dir / "tune", options, tune_budget,
            seed=cfg.seed, reuse=reuse_finished,
        )  # fmt: skip

    seed_values = [cfg.seed + s for s in range(seeds)]
    outcomes = _train_seeds(configs, to_train, data, out_dir, options, seed_values, reuse_finished)

    rows = _summary_rows(
        outcomes, to_train, wanted, seed_values, configs,
        n_boot=n_boot, bootstrap_seed=bootstrap_seed,
    )  # fmt: skip
    report = {
        "format": 2,
        "seeds": seed_values,
        "bootstrap": _bootstrap_section(n_boot, bootstrap_seed, seeds),
        "configs": {v.value: c.to_dict() for v, c in configs.items() if v in wanted},
        "variant_overrides": {v.value: o for v, o in overrides.items()},
        "tuning": _tuning_section(tuning, tune_budget),
        "rows": rows,
    }
    return write_report(report, out_dir, cfg, data)


__all__ = ["run_ablation", "run_dir_of", "tune_variants"]
