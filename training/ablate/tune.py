"""Equal-budget tuning for the ablation: every variant searches its own knobs on validation.

``rocketrank ablate --tune BUDGET`` gives every trained variant — the
baselines included — exactly ``BUDGET`` trials over the knobs of its
:func:`~training.ablate.knobs.search_space`. A trial is one training run at
the base seed on the prepared data **without its test split**, so the
trainer's final metrics in
the trial's ``metrics.json`` are the validation metrics (``"split": "valid"``)
and no trial can read test. The chosen values are those of the trial with the
best validation AUC of the net the variant trains (the light net; the booster
for ``booster_alone``); the ablation then trains its seeds with them and reads
test once, at the end.

Sampling: Optuna's TPE sampler (``pip install 'rocketrank[tune]'``), seeded;
without Optuna a seeded random search over the same spaces (a message says
so). Trial 0 of every variant is its untuned setting (the config's values)
when that lies inside the space, so tuning can only match or beat it on
validation. Both samplers are deterministic for a given seed; each variant's
sampler is seeded from the tuning seed and the variant's name, so a variant's
trials do not depend on which other variants are tuned.

Two-stage KD's trials distil the teacher of ``booster_alone``'s chosen trial.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from training.ablate.knobs import Knob, current_values, knob_overrides, search_space
from training.ablate.runs import run_one
from training.ablate.variants import Overrides, apply_overrides
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.rules import Variant
from training.loop.errors import TrainingDivergedError, TrainingError
from training.loop.options import TrainOptions

log = logging.getLogger(__name__)

try:  # optional: the `tune` extra
    import optuna
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    optuna = None


# --------------------------------------------------------------------------- samplers


class Sampler(Protocol):
    """Proposes parameter sets one at a time and learns from each result."""

    name: str

    def ask(self) -> dict[str, Any]: ...

    def tell(self, value: float | None) -> None: ...


class OptunaSampler:
    """Optuna's TPE sampler (seeded) through the ask/tell interface."""

    name = "optuna TPESampler"

    def __init__(self, knobs: Sequence[Knob], seed: int, first: Mapping[str, Any] | None) -> None:
        assert optuna is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.knobs = tuple(knobs)
        self.study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        if first is not None:
            self.study.enqueue_trial(dict(first))
        self._trial: Any = None

    def ask(self) -> dict[str, Any]:
        self._trial = self.study.ask()
        params: dict[str, Any] = {}
        for k in self.knobs:
            if k.integer:
                params[k.name] = self._trial.suggest_int(k.name, int(k.low), int(k.high))
            else:
                params[k.name] = self._trial.suggest_float(k.name, k.low, k.high, log=k.log)
        return params

    def tell(self, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            self.study.tell(self._trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(self._trial, value)


class RandomSampler:
    """Seeded random search: uniform (or log-uniform) draws, integers uniform."""

    name = "random search (optuna not installed)"

    def __init__(self, knobs: Sequence[Knob], seed: int, first: Mapping[str, Any] | None) -> None:
        self.knobs = tuple(knobs)
        self.rng = np.random.default_rng(seed)
        self._first = None if first is None else dict(first)

    def ask(self) -> dict[str, Any]:
        if self._first is not None:
            params, self._first = self._first, None
            return params
        params: dict[str, Any] = {}
        for k in self.knobs:
            if k.integer:
                params[k.name] = int(self.rng.integers(int(k.low), int(k.high) + 1))
            elif k.log:
                params[k.name] = float(
                    math.exp(self.rng.uniform(math.log(k.low), math.log(k.high)))
                )
            else:
                params[k.name] = float(self.rng.uniform(k.low, k.high))
        return params

    def tell(self, value: float | None) -> None:
        pass


def make_sampler(
    knobs: Sequence[Knob], seed: int, first: Mapping[str, Any] | None = None
) -> Sampler:
    """Optuna's TPE when installed, else the seeded random search."""
    if optuna is not None:
        return OptunaSampler(knobs, seed, first)
    return RandomSampler(knobs, seed, first)


def sampler_name() -> str:
    """The sampler :func:`make_sampler` uses here."""
    return OptunaSampler.name if optuna is not None else RandomSampler.name


def sampler_message() -> str:
    """One line for the user: which sampler tunes, and how to get TPE when it is missing."""
    if optuna is not None:
        return f"tuning with {OptunaSampler.name} (optuna {optuna.__version__}, seeded)"
    return (
        "optuna is not installed (pip install 'rocketrank[tune]'): tuning with a seeded "
        "random search over the same spaces instead of TPE"
    )


def variant_seed(seed: int, variant: Variant) -> int:
    """A sampler seed of its own per variant (stable across runs and variant subsets)."""
    return (seed * 1_000_003 + zlib.crc32(variant.value.encode())) % 2**31


# --------------------------------------------------------------------------- tuning


@dataclass
class Trial:
    """One tuning trial.

    Attributes:
        number: 0-based, in the order run.
        params: the knob values.
        valid_auc: validation AUC of the net the variant trains; None when
            the run diverged.
        state: ``complete`` or ``failed: <reason>``.
        run_dir: the trial's run directory.
    """

    number: int
    params: dict[str, Any]
    valid_auc: float | None
    state: str
    run_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuneResult:
    """One variant's tuning: every trial and the chosen one.

    Attributes:
        variant: the variant tuned.
        sampler: which sampler proposed the trials.
        knobs: the knob names searched.
        trials: every trial, in order (``len(trials)`` is the budget).
        chosen: the index of the chosen trial in ``trials``.
        overrides: the chosen values as ``{section: {key: value}}``.
    """

    variant: Variant
    sampler: str
    knobs: list[str]
    trials: list[Trial]
    chosen: int
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def best(self) -> Trial:
        return self.trials[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.value,
            "sampler": self.sampler,
            "knobs": self.knobs,
            "budget": len(self.trials),
            "chosen": self.best.params,
            "chosen_trial": self.best.number,
            "chosen_valid_auc": self.best.valid_auc,
            "overrides": self.overrides,
            "trials": [t.to_dict() for t in self.trials],
        }


TrialRunner = Callable[[RunConfig, Path], float]
"""Trains one trial config in a run directory and returns its validation AUC."""


def choose(trials: Sequence[Trial]) -> int:
    """The index of the trial with the best validation AUC (the first of equals).

    Raises:
        TrainingError: every trial failed.
    """
    done = [(t.valid_auc, -i) for i, t in enumerate(trials) if t.valid_auc is not None]
    if not done:
        raise TrainingError("tuning: every trial failed; see the trial run directories")
    return -max(done)[1]


def tune_variant(
    cfg: RunConfig,
    budget: int,
    run_trial: TrialRunner,
    out_dir: Path,
    *,
    seed: int = 0,
    steps_per_epoch: int = 1,
) -> TuneResult:
    """``budget`` trials of one variant's config, chosen by validation AUC.

    Args:
        cfg: the variant's config before tuning (overrides applied).
        budget: number of trials (≥ 1).
        run_trial: trains a trial and returns its validation AUC (raises
            ``TrainingDivergedError`` on divergence, recorded as a failed trial).
        out_dir: trial ``k`` runs in ``out_dir/trial<k>``.
        seed: the tuning seed (combined with the variant's name).
        steps_per_epoch: converts a config's ``warmup_steps`` into epochs for trial 0.
    """
    if budget < 1:
        raise ValueError(f"tuning budget must be ≥ 1, got {budget}")
    variant = Variant(cfg.distill.variant)
    knobs = search_space(cfg)
    first = current_values(cfg, knobs, steps_per_epoch)
    inside = all(k.contains(first[k.name]) for k in knobs)
    sampler = make_sampler(knobs, variant_seed(seed, variant), first if inside else None)
    trials: list[Trial] = []
    for number in range(budget):
        params = sampler.ask()
        run_dir = out_dir / f"trial{number}"
        trial_cfg = apply_overrides(
            cfg, knob_overrides(cfg, params), f"tuning {variant.value} trial {number}"
        )
        try:
            value: float | None = float(run_trial(trial_cfg, run_dir))
            state = "complete"
            if not math.isfinite(value):
                value, state = None, "failed: validation AUC is not finite"
        except TrainingDivergedError as exc:
            value, state = None, f"failed: {exc}"
        sampler.tell(value)
        trials.append(Trial(number, dict(params), value, state, str(run_dir)))
        log.info("tune %s trial %d: %s -> %s", variant.value, number, params, value)
    chosen = choose(trials)
    return TuneResult(
        variant=variant,
        sampler=sampler.name,
        knobs=[k.name for k in knobs],
        trials=trials,
        chosen=chosen,
        overrides=knob_overrides(cfg, trials[chosen].params),
    )


def validation_data(data: PreparedData) -> PreparedData:
    """``data`` without its test split: a trial's final metrics are then the validation ones."""
    if data.valid is None or not len(data.valid):
        raise TrainingError("tuning needs a validation split to choose on")
    return dataclasses.replace(data, test=None)


def trial_runner(
    data: PreparedData,
    options: TrainOptions,
    *,
    teacher_dir: Path | None = None,
    reuse: bool = False,
) -> TrialRunner:
    """A :data:`TrialRunner` that trains on ``data`` without its test split."""
    valid_only = validation_data(data)

    def run(cfg: RunConfig, run_dir: Path) -> float:
        outcome = run_one(
            cfg, valid_only, run_dir, options, teacher_dir=teacher_dir, reuse=reuse, score=False
        )
        metrics = outcome.metrics
        if metrics.get("split") != "valid":
            raise TrainingError(f"tuning trial {run_dir} was evaluated on {metrics.get('split')}")
        net = "booster" if Variant(cfg.distill.variant) is Variant.BOOSTER_ALONE else "light"
        return float(metrics[net]["auc"])

    return run


def merge_overrides(*layers: Overrides | None) -> dict[str, dict[str, Any]]:
    """Section-wise merge; later layers win key by key."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            out.setdefault(section, {}).update(values)
    return out


__all__ = [
    "OptunaSampler",
    "RandomSampler",
    "Trial",
    "TuneResult",
    "choose",
    "make_sampler",
    "merge_overrides",
    "sampler_message",
    "sampler_name",
    "trial_runner",
    "tune_variant",
    "validation_data",
    "variant_seed",
]
