"""Every variant's run config: the fairness rule and the per-variant overrides."""

from __future__ import annotations

import json

import pytest

from tests.helpers.trainer import tiny_config
from training.ablate.runs import check_reusable, config_differences
from training.ablate.variants import (
    VARIANTS,
    apply_overrides,
    describe_settings,
    load_variant_overrides,
    variant_config,
    with_variant,
)
from training.config.errors import ConfigError
from training.distill.rules import Hint, Variant
from training.distill.schedules import Schedule
from training.loop.errors import TrainingError

DISTILLED = [v for v in VARIANTS if v not in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE)]


def test_the_configs_distillation_settings_reach_every_distilled_variant():
    cfg = tiny_config(
        "pfd_md",
        distill={"hint": "logit_mse", "lambda": 0.3, "schedule": "step", "warmup_epochs": 0.25},
    )
    for variant in DISTILLED:
        d = variant_config(cfg, variant).distill
        assert d.variant is variant
        assert (d.resolved_hint, d.resolved_lambda) == (Hint.LOGIT_MSE, 0.3), variant
        assert (d.schedule, d.warmup_epochs) == (Schedule.STEP, 0.25), variant
    # the gradient block stays the variant's own
    assert variant_config(cfg, Variant.ROCKET).distill.resolved_gradient_block
    assert not variant_config(cfg, Variant.ROCKET_NO_GRADIENT_BLOCK).distill.resolved_gradient_block


def test_single_net_variants_have_no_hint_schedule_or_warmup():
    cfg = tiny_config("pfd", distill={"lambda": 0.3, "schedule": "step", "warmup_steps": 20})
    for variant in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE):
        d = variant_config(cfg, variant).distill
        assert d.resolved_hint is Hint.OFF and d.resolved_lambda == 0.0
        assert (d.schedule, d.warmup_steps, d.warmup_epochs) == (Schedule.CONSTANT, 0, 0.0)
        assert describe_settings(variant_config(cfg, variant)) == "labels only"


def test_unset_keys_mean_each_variants_default():
    cfg = tiny_config("rocket")  # neither hint nor lambda named
    assert variant_config(cfg, Variant.ROCKET).distill.resolved_lambda == 1.0
    pfd = variant_config(cfg, Variant.PFD).distill
    assert (pfd.resolved_hint, pfd.resolved_lambda) == (Hint.SOFT_BCE, 0.5)


def test_a_setting_a_variant_refuses_falls_back_to_its_default():
    # a Rocket γ of 3 cannot be a PFD mixing weight (λ ≤ 1): the hint carries, λ does not
    rocket = tiny_config("rocket", distill={"hint": "logit_mse", "lambda": 3.0})
    for variant in (Variant.PFD, Variant.PFD_MD, Variant.TWO_STAGE_KD):
        d = variant_config(rocket, variant).distill
        assert (d.resolved_hint, d.resolved_lambda) == (Hint.LOGIT_MSE, 0.5), variant
    assert variant_config(rocket, Variant.ROCKET_NO_GRADIENT_BLOCK).distill.resolved_lambda == 3.0
    # two-stage KD's frozen teacher gives a logit, not a hidden layer: default hint and λ
    hidden = tiny_config("rocket", distill={"hint": "hidden", "lambda": 0.2})
    kd = variant_config(hidden, Variant.TWO_STAGE_KD).distill
    assert (kd.resolved_hint, kd.resolved_lambda) == (Hint.SOFT_BCE, 0.5)
    assert variant_config(hidden, Variant.PFD_MD).distill.resolved_hint is Hint.HIDDEN


def test_pfd_gets_a_teacher_of_the_students_size():
    cfg = tiny_config("rocket")
    pfd = variant_config(cfg, Variant.PFD)
    assert pfd.model.booster == "mlp" and pfd.model.booster_dims == cfg.model.light_dims
    assert variant_config(cfg, Variant.PFD_MD).model == cfg.model
    assert with_variant(cfg, Variant.PFD).model == cfg.model


def test_overrides_apply_last_and_are_validated_strictly():
    cfg = tiny_config("rocket")
    out = variant_config(cfg, Variant.PFD, {"distill": {"lambda": 0.8}, "optim": {"epochs": 3}})
    assert out.distill.resolved_lambda == 0.8 and out.optim.epochs == 3
    assert out.model.booster == "mlp"  # PFD's teacher size is kept
    with pytest.raises(ConfigError, match=r"distill\.lamda: unknown key"):
        apply_overrides(cfg, {"distill": {"lamda": 0.8}})
    with pytest.raises(ConfigError, match=r"optim\.epochs: must be an integer"):
        apply_overrides(cfg, {"optim": {"epochs": "3"}})
    with pytest.raises(ConfigError, match="not an overridable section"):
        apply_overrides(cfg, {"seed": {"x": 1}})
    with pytest.raises(ConfigError, match=r"distill\.variant"):
        apply_overrides(cfg, {"distill": {"variant": "pfd"}})
    with pytest.raises(ConfigError, match="λ must be <= 1"):
        variant_config(cfg, Variant.PFD, {"distill": {"lambda": 2.0}})


def test_variant_config_file_errors_name_file_variant_and_key(tmp_path):
    cfg = tiny_config("rocket")
    path = tmp_path / "variants.yaml"
    path.write_text("pfd: {distill: {lambda: 0.7}}\nlight_alone: {optim: {lr_sparse: 0.005}}\n")
    overrides = load_variant_overrides(path, cfg)
    assert overrides == {
        Variant.PFD: {"distill": {"lambda": 0.7}},
        Variant.LIGHT_ALONE: {"optim": {"lr_sparse": 0.005}},
    }
    light = variant_config(cfg, Variant.LIGHT_ALONE, overrides[Variant.LIGHT_ALONE])
    assert light.optim.lr_sparse == 0.005
    path.write_text("rocket: {optim: {lr_dens: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"variants\.yaml: rocket: optim\.lr_dens: unknown key"):
        load_variant_overrides(path, cfg)
    path.write_text("rockett: {optim: {lr_dense: 0.1}}\n")
    with pytest.raises(ConfigError, match="rockett: unknown variant"):
        load_variant_overrides(path, cfg)
    # light_alone has no hint: a hint for it breaks the variant's rules
    path.write_text("light_alone: {distill: {hint: soft_bce}}\n")
    with pytest.raises(ConfigError, match=r"light_alone: distill\.hint"):
        load_variant_overrides(path, cfg)


def test_config_differences_name_every_changed_key():
    stored = {"seed": 0, "optim": {"lr_dense": 0.001, "epochs": 1}, "model": {"dims": [8, 4]}}
    expected = {"seed": 0, "optim": {"lr_dense": 0.01, "epochs": 1}, "model": {"dims": (8, 4)}}
    assert config_differences(stored, expected) == ["optim.lr_dense (0.001 → 0.01)"]
    assert config_differences(stored, {**expected, "label": "click"}) == [
        "optim.lr_dense (0.001 → 0.01)",
        "label ('<missing>' → 'click')",
    ]
    # keys only the stored record has (the trainer may record more) are ignored
    assert config_differences({**stored, "extra": 1}, stored) == []


def test_check_reusable_refuses_a_run_of_another_config(tmp_path):
    run = tmp_path / "run"
    assert check_reusable(run, {"seed": 0}) is None  # nothing finished: train it
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"light": {"auc": 0.7}}))
    with pytest.raises(TrainingError, match=r"no config\.json"):
        check_reusable(run, {"seed": 0})
    (run / "config.json").write_text(json.dumps({"seed": 0, "distill": {"lambda": 0.5}}))
    assert check_reusable(run, {"seed": 0, "distill": {"lambda": 0.5}}) == {"light": {"auc": 0.7}}
    with pytest.raises(TrainingError, match=r"distill\.lambda \(0\.5 → 0\.9\)"):
        check_reusable(run, {"seed": 0, "distill": {"lambda": 0.9}})
