"""Equal-budget tuning: chosen on validation only, the same trials per variant, deterministic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.ablate import tune
from training.ablate.knobs import (
    EPOCHS,
    LR_DENSE,
    LR_SPARSE,
    MIX_LAMBDA,
    ROCKET_GAMMA,
    TEMPERATURE,
    WARMUP_EPOCHS,
    current_values,
    knob_overrides,
    search_space,
)
from training.ablate.run import run_ablation, tune_variants
from training.ablate.runs import RunOutcome
from training.ablate.tune import choose, trial_runner, tune_variant
from training.ablate.variants import apply_overrides, variant_config
from training.data.prepare import prepare_data
from training.distill.rules import Variant
from training.distill.schedules import Schedule
from training.loop.errors import TrainingDivergedError, TrainingError
from training.loop.options import TrainOptions

QUIET = TrainOptions(progress=False, threads=1, checkpoint_every=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("tune") / "data", rows=2_000)


@pytest.fixture(params=["optuna", "random"])
def sampler(request, monkeypatch):
    """Run a test with Optuna's TPE and with the fallback random search."""
    if request.param == "optuna":
        pytest.importorskip("optuna")
    else:
        monkeypatch.setattr(tune, "optuna", None)
    return request.param


def _valid_and_test(cfg):
    """A world where validation and test disagree: valid peaks at lr 1e-3, test at 1e-2."""
    x = math.log10(cfg.optim.lr_dense)
    return 0.7 - (x + 3) ** 2 / 10, 0.7 - (x + 2) ** 2 / 10


def test_search_spaces_are_the_variants_own_knobs():
    light = search_space(variant_config(tiny_config("rocket"), Variant.LIGHT_ALONE))
    assert [k.name for k in light] == ["lr_dense", "lr_sparse", "epochs"]
    booster = search_space(variant_config(tiny_config("rocket"), Variant.BOOSTER_ALONE))
    assert [k.name for k in booster] == ["lr_dense", "lr_sparse", "epochs"]
    pfd = search_space(variant_config(tiny_config("rocket"), Variant.PFD))
    assert pfd == (MIX_LAMBDA, WARMUP_EPOCHS, LR_DENSE, LR_SPARSE, EPOCHS)
    assert MIX_LAMBDA.high < 1  # PFD and two-stage KD mix (1−λ)·BCE + λ·hint
    rocket = search_space(variant_config(tiny_config("rocket"), Variant.ROCKET))
    assert rocket[0] == ROCKET_GAMMA
    kl = search_space(tiny_config("pfd", distill={"hint": "kl"}))
    assert kl[-1] == TEMPERATURE
    # a config that trains longer than the default range keeps its own epochs reachable
    long = search_space(tiny_config("pfd", epochs=8))
    assert next(k for k in long if k.name == "epochs").high == 8


def test_knob_values_become_a_valid_config():
    cfg = tiny_config("pfd", distill={"schedule": "constant"})
    params = {"lambda": 0.3, "warmup_epochs": 0.5, "lr_dense": 2e-3, "epochs": 3}
    out = apply_overrides(cfg, knob_overrides(cfg, params))
    d = out.distill
    assert (d.resolved_lambda, d.warmup_epochs, d.warmup_steps) == (0.3, 0.5, 0)
    assert d.schedule is Schedule.STEP  # a warm-up needs a schedule that has one
    assert (out.optim.lr_dense, out.optim.epochs) == (2e-3, 3)
    linear = tiny_config("pfd", distill={"schedule": "linear", "warmup_steps": 10})
    ramp = apply_overrides(linear, knob_overrides(linear, {"warmup_epochs": 0.2})).distill
    assert (ramp.schedule, ramp.warmup_epochs, ramp.warmup_steps) == (Schedule.LINEAR, 0.2, 0)
    assert current_values(linear, [WARMUP_EPOCHS], steps_per_epoch=40) == {"warmup_epochs": 0.25}


def test_the_choice_follows_validation_not_test(sampler, tmp_path):
    cfg = variant_config(tiny_config("rocket"), Variant.LIGHT_ALONE)
    test_of = {}

    def run_trial(trial_cfg, run_dir):
        valid, test = _valid_and_test(trial_cfg)
        test_of[str(run_dir)] = test
        return valid

    result = tune_variant(cfg, 8, run_trial, tmp_path, seed=1)
    valid = [t.valid_auc for t in result.trials]
    test = [test_of[t.run_dir] for t in result.trials]
    assert valid.index(max(valid)) != test.index(max(test))  # the two splits disagree here
    assert result.chosen == valid.index(max(valid))
    assert result.best.params["lr_dense"] == result.overrides["optim"]["lr_dense"]


def test_trial_zero_is_the_untuned_setting(sampler, tmp_path):
    cfg = variant_config(tiny_config("pfd_md", distill={"lambda": 0.4}), Variant.PFD_MD)
    result = tune_variant(cfg, 2, lambda c, d: 0.5, tmp_path, steps_per_epoch=10)
    assert result.trials[0].params == {
        "lambda": 0.4,
        "warmup_epochs": 0.0,
        "lr_dense": cfg.optim.lr_dense,
        "lr_sparse": cfg.optim.lr_sparse,
        "epochs": cfg.optim.epochs,
    }


def test_tuning_is_deterministic_for_a_seed(sampler, tmp_path):
    cfg = variant_config(tiny_config("rocket"), Variant.ROCKET)

    def params(seed):
        result = tune_variant(
            cfg, 5, lambda c, d: _valid_and_test(c)[0], tmp_path / str(seed), seed=seed
        )
        assert result.sampler == tune.sampler_name()
        return [t.params for t in result.trials]

    assert params(3) == params(3)
    assert params(3)[1:] != params(4)[1:]  # trial 0 is the untuned setting for any seed


def test_every_variant_gets_the_same_budget(monkeypatch, tmp_path):
    base = tiny_config("pfd_md")
    configs = {v: variant_config(base, v) for v in (
        Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE, Variant.TWO_STAGE_KD, Variant.PFD_MD
    )}  # fmt: skip
    teachers = {}

    def fake_runner(data, options, *, teacher_dir=None, reuse=False):
        def run(cfg, run_dir):
            teachers.setdefault(cfg.distill.variant, set()).add(teacher_dir)
            return _valid_and_test(cfg)[0]

        return run

    monkeypatch.setattr("training.ablate.run.trial_runner", fake_runner)

    class Train:
        def num_batches(self, batch_size):
            return 10

    data = type("Data", (), {"train": Train()})()
    results = tune_variants(configs, data, tmp_path, QUIET, 4, seed=0)
    assert list(results) == list(configs)
    for variant, result in results.items():
        assert len(result.trials) == 4, variant
        assert [t.run_dir for t in result.trials] == [
            str(tmp_path / variant.value / f"trial{k}") for k in range(4)
        ]
    # two-stage KD's trials distil the booster of booster_alone's chosen trial
    assert teachers[Variant.TWO_STAGE_KD] == {Path(results[Variant.BOOSTER_ALONE].best.run_dir)}
    assert teachers[Variant.PFD_MD] == {None}


def test_a_diverged_trial_counts_in_the_budget_and_is_never_chosen(tmp_path):
    cfg = variant_config(tiny_config("rocket"), Variant.LIGHT_ALONE)
    calls = []

    def run_trial(trial_cfg, run_dir):
        calls.append(run_dir)
        if len(calls) == 1:
            raise TrainingDivergedError("loss is not finite at step 3")
        return 0.6 + len(calls) / 100

    result = tune_variant(cfg, 3, run_trial, tmp_path)
    assert len(result.trials) == 3 and result.trials[0].valid_auc is None
    assert result.trials[0].state.startswith("failed: loss is not finite")
    assert result.chosen == 2
    with pytest.raises(TrainingError, match="every trial failed"):
        choose(result.trials[:1])


def test_trials_train_without_the_test_split(monkeypatch, data_dir, tmp_path):
    seen = []
    split = "valid"

    def fake_run_one(cfg, data, run_dir, options, *, teacher_dir=None, reuse=False, score=True):
        seen.append((data.test, len(data.valid), score))
        metrics = {"split": split, "light": {"auc": 0.61}, "booster": {"auc": 0.7}}
        return RunOutcome(metrics, None, False)

    monkeypatch.setattr(tune, "run_one", fake_run_one)
    data = prepare_data(data_dir, tiny_config("rocket"), max_rows=500)
    runner = trial_runner(data, QUIET)
    assert runner(tiny_config("light_alone"), tmp_path) == 0.61
    assert runner(tiny_config("booster_alone"), tmp_path) == 0.7  # the net it trains
    assert seen == [(None, len(data.valid), False)] * 2
    assert data.test is not None  # the caller's data keep their test split
    split = "test"
    with pytest.raises(TrainingError, match="evaluated on test"):
        runner(tiny_config("light_alone"), tmp_path)


@pytest.mark.slow
def test_tuned_ablation_chooses_on_validation_and_reads_test_once(data_dir, tmp_path):
    cfg = tiny_config("pfd", epochs=1, batch_size=512)
    data = prepare_data(data_dir, cfg)
    out = tmp_path / "abl"
    report = run_ablation(
        cfg, data, out, QUIET, variants=["light_alone", "pfd"], tune_budget=2, n_boot=50
    )
    tuning = report["tuning"]
    assert tuning["budget"] == 2 and set(tuning["variants"]) == {"light_alone", "pfd"}
    for name, t in tuning["variants"].items():
        assert len(t["trials"]) == 2
        for trial in t["trials"]:
            metrics = json.loads((Path(trial["run_dir"]) / "metrics.json").read_text())
            assert metrics["split"] == "valid"  # the trial never saw the test split
            assert trial["valid_auc"] == pytest.approx(metrics["light"]["auc"])
        best = max(t["trials"], key=lambda tr: tr["valid_auc"])
        assert t["chosen"] == best["params"]
        # the seed run trained with the chosen values and was scored on test
        run_cfg = json.loads((out / name / "seed0" / "config.json").read_text())
        assert run_cfg["optim"]["lr_dense"] == pytest.approx(best["params"]["lr_dense"])
        assert run_cfg["optim"]["epochs"] == best["params"]["epochs"]
        final = json.loads((out / name / "seed0" / "metrics.json").read_text())
        assert final["split"] == "test"
    md = (out / "report.md").read_text()
    assert "## Tuning (validation split only)" in md and "2 trials" in md


def test_without_optuna_the_fallback_says_so(monkeypatch):
    monkeypatch.setattr(tune, "optuna", None)
    assert "optuna is not installed" in tune.sampler_message()
    assert "random search" in tune.sampler_message()
    sampler = tune.make_sampler([LR_DENSE, EPOCHS], seed=0)
    assert isinstance(sampler, tune.RandomSampler)
    params = sampler.ask()
    assert LR_DENSE.contains(params["lr_dense"]) and EPOCHS.contains(params["epochs"])
