"""The typed run config: strict loading, shipped configs, model arguments and cost budget."""

from __future__ import annotations

import pytest
import torch
import yaml

from models.contract.feature_spec import Side
from models.joint import JointModel
from tests.helpers.repo import ROOT
from training.config.errors import ConfigError
from training.config.model_section import model_args
from training.config.run import RunConfig, load_config
from training.data.schema import Schema
from training.distill.rules import Hint, Variant
from training.synth.log_schema import schema_dict

CONFIGS = ROOT / "configs"
SHIPPED = ["coarse_ctr", "fine_ctr", "fine_cvr"]


def _cfg(**sections) -> dict:
    return {"task": "ctr", **sections}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_cfg(distill={"lamda": 0.5}), "distill.lamda"),
        (_cfg(modle={}), "modle"),
        (_cfg(model={"light_dim": [8]}), "model.light_dim"),
        (_cfg(optim={"lr": 0.1}), "optim.lr"),
        (_cfg(data={"batchsize": 8}), "data.batchsize"),
    ],
)
def test_unknown_keys_are_rejected_by_path(data, key) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: unknown key"):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("value", ["False", "false", "no", 0, 1, None])
def test_gradient_block_must_be_a_real_bool(value) -> None:
    if value is None:  # YAML null means "the variant's default"
        cfg = RunConfig.from_dict(_cfg(distill={"gradient_block": None}))
        assert cfg.distill.resolved_gradient_block is True
        return
    with pytest.raises(ConfigError, match=r"distill\.gradient_block: must be a YAML bool"):
        RunConfig.from_dict(_cfg(distill={"gradient_block": value}))


def test_yaml_false_is_the_bool(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("task: ctr\ndistill:\n  variant: rocket\n  gradient_block: false\n")
    cfg = load_config(path)
    assert cfg.distill.gradient_block is False
    assert cfg.distill.settings().gradient_block is False
    path.write_text('task: ctr\ndistill:\n  gradient_block: "False"\n')
    with pytest.raises(ConfigError, match=r"run.yaml: distill.gradient_block"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_cfg(distill={"variant": "rockets"}), "distill.variant: must be one of"),
        (_cfg(distill={"variant": "pfd", "lambda": 1.5}), "distill.lambda"),
        (_cfg(distill={"variant": "light_alone", "hint": "kl"}), "distill.hint"),
        (
            _cfg(distill={"variant": "rocket_no_gradient_block", "gradient_block": True}),
            "contradicts",
        ),
        (_cfg(distill={"schedule": "linear"}), "distill.warmup_steps"),
        (_cfg(model={"light": "gbdt"}), "model.light: must be one of"),
        (_cfg(model={"light_dims": [8, 0]}), "model.light_dims"),
        (_cfg(model={"light_dims": "8,4"}), "model.light_dims: must be a list"),
        (_cfg(model={"cross_layers": 2.5}), "model.cross_layers: must be an integer"),
        (_cfg(model={"cross_layers": True}), "model.cross_layers: must be an integer"),
        (_cfg(model={"sharing": "separate"}), "model.separate_tables"),
        (_cfg(model={"separate_tables": ["user_id"]}), "model.separate_tables"),
        (_cfg(optim={"lr_dense": "1e-3"}), "optim.lr_dense: must be a number"),
        (_cfg(optim={"epochs": 0}), "optim.epochs"),
        ({"data": {}}, "task: required key missing"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_defaults_per_variant() -> None:
    rocket = RunConfig.from_dict(_cfg(distill={"variant": "rocket"})).distill
    assert rocket.resolved_hint is Hint.LOGIT_MSE and rocket.resolved_lambda == 1.0
    pfd = RunConfig.from_dict(_cfg(distill={"variant": "pfd"})).distill
    assert pfd.resolved_hint is Hint.SOFT_BCE and pfd.resolved_lambda == 0.5
    alone = RunConfig.from_dict(_cfg(distill={"variant": "light_alone"})).distill
    assert alone.settings().schedule.value == 0.0
    anneal = RunConfig.from_dict(_cfg(distill={"schedule": "anneal"})).distill
    with pytest.raises(ConfigError, match="total step"):
        anneal.settings()
    assert anneal.settings(total_steps=100).schedule(50) == pytest.approx(0.5)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip(name) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["distill"]["lambda"] == cfg.distill.lam


def test_shipped_configs_say_what_the_brief_says() -> None:
    coarse = load_config(CONFIGS / "coarse_ctr.yaml")
    assert (coarse.task, coarse.model.light, coarse.distill.variant) == (
        "ctr",
        "two_tower",
        Variant.PFD_MD,
    )
    fine = load_config(CONFIGS / "fine_ctr.yaml")
    assert (fine.model.light, fine.model.booster, fine.distill.variant) == (
        "mlp",
        "dcn",
        Variant.ROCKET,
    )
    cvr = load_config(CONFIGS / "fine_cvr.yaml")
    assert (cvr.task, cvr.distill.variant) == ("cvr", Variant.PFD)


def _schema() -> Schema:
    return Schema.from_dict(schema_dict())


def _random_batch(args, rows: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {}
    for spec in args.features:
        name = spec["name"]
        if name in args.cardinalities:
            shape = (rows, spec["max_len"]) if spec["type"] == "multi_categorical" else (rows,)
            batch[name] = torch.randint(0, args.cardinalities[name], shape, generator=g)
        else:
            batch[name] = torch.randn(rows, generator=g)
    return batch


def test_model_args_for_the_coarse_two_tower_moves_cross_features_to_the_booster() -> None:
    schema = _schema()
    cfg = load_config(CONFIGS / "coarse_ctr.yaml")
    args = model_args(cfg, schema, lambda name: 50)
    cross = [f.name for f in schema.features if f.side is Side.CROSS]
    served, privileged = schema.task_features("ctr")
    assert not set(cross) & set(args.served)
    assert set(privileged) <= set(args.privileged)
    assert set(args.served) == {n for n in served if n not in cross}
    assert args.separate_tables == ["user_id"]
    model = JointModel(args)
    assert "embeddings.booster_tables.user_id.weight" in dict(model.booster_only_parameters())


def test_model_args_for_cvr_makes_post_click_features_privileged() -> None:
    args = model_args(load_config(CONFIGS / "fine_cvr.yaml"), _schema(), lambda name: 50)
    assert {"dwell_time_s", "reviews_viewed", "chatted_with_seller"} <= set(args.privileged)
    assert "dwell_time_s" not in args.served


def test_model_args_rejects_features_the_task_does_not_use() -> None:
    schema = _schema()
    bad = RunConfig.from_dict(_cfg(model={"embedding_dims": {"user_idd": 8}}))
    with pytest.raises(ConfigError, match=r"model\.embedding_dims\.user_idd"):
        model_args(bad, schema, lambda name: 50)
    bad = RunConfig.from_dict(_cfg(model={"sharing": "separate", "separate_tables": ["position"]}))
    with pytest.raises(ConfigError, match=r"model\.separate_tables: 'position'"):
        model_args(bad, schema, lambda name: 50)


def test_hidden_hint_builds_the_projection() -> None:
    cfg = RunConfig.from_dict(_cfg(distill={"variant": "rocket", "hint": "hidden"}))
    args = model_args(cfg, _schema(), lambda name: 50)
    assert args.hint_projection is True


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_light_nets_cost_at_most_a_tenth_of_the_booster(name) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    args = model_args(cfg, _schema(), lambda name: 1000)
    model = JointModel(args)
    report = model.cost_report(_random_batch(args))
    assert report["light_flops_per_candidate"] > 0
    ratio = report["light_serving_flops_per_candidate"] / report["booster_flops_per_candidate"]
    assert ratio <= 0.1, (name, report)
    # even the full light forward (two-tower: both towers per row) stays under the budget
    assert report["light_flops_per_candidate"] / report["booster_flops_per_candidate"] <= 0.1


def test_warmup_epochs_scale_with_the_epoch_and_exclude_warmup_steps() -> None:
    cfg = RunConfig.from_dict(
        _cfg(distill={"variant": "pfd", "schedule": "step", "warmup_epochs": 0.25})
    )
    # a quarter of an epoch: 100 steps of 400, 20 steps of 78 (λ = 0 before, 0.5 after)
    big, small = cfg.distill.settings(800, 400), cfg.distill.settings(156, 78)
    assert (big.schedule(99), big.schedule(100)) == (0.0, 0.5)
    assert (small.schedule(19), small.schedule(20)) == (0.0, 0.5)
    with pytest.raises(ConfigError, match="steps per epoch"):
        cfg.distill.settings(800)
    with pytest.raises(ConfigError, match="not both"):
        RunConfig.from_dict(_cfg(distill={"warmup_steps": 10, "warmup_epochs": 0.5}))
