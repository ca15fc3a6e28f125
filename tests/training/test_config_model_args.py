"""The model section fills ``JointModelArgs`` by field name: same model as the old hand mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.joint_args import JointModelArgs
from tests.helpers.repo import ROOT
from training.config.model_section import ModelConfig, architecture_args, model_args
from training.config.run import load_config
from training.data.schema import load_schema

SCHEMA = ROOT / "tests" / "fixtures" / "legacy" / "data" / "schema.yaml"


def _old_mapping(m: ModelConfig) -> dict:
    """The arguments as the run config mapped them by hand before issue 12."""
    return {
        "light_kind": m.light,
        "light_dims": list(m.light_dims),
        "scale": m.tower_scale,
        "learn_scale": m.learn_scale,
        "tower_bias": m.tower_bias,
        "booster_kind": m.booster,
        "booster_dims": list(m.booster_dims),
        "cross_layers": m.cross_layers,
        "cross_rank": m.cross_rank,
        "dcn_structure": m.dcn_structure,
        "norm": m.norm,
        "dropout": m.dropout,
        "embedding_dims": dict(m.embedding_dims),
        "separate_tables": list(m.separate_tables),
        "sparse": m.sparse,
        "sparse_min_rows": m.sparse_min_rows,
        "detach_shared_for_light": m.detach_shared_for_light,
    }


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_give_the_same_model_arguments(path: Path):
    cfg = load_config(path)
    assert architecture_args(cfg.model) == _old_mapping(cfg.model)
    schema = load_schema(SCHEMA)
    if cfg.task not in schema.tasks:
        pytest.skip(f"the fixture schema has no task {cfg.task!r}")
    args = model_args(cfg, schema, lambda name: 7)
    rebuilt = JointModelArgs.from_dict(args.to_dict())
    assert rebuilt == args
    for key, value in _old_mapping(cfg.model).items():
        assert getattr(args, key) == value, key


def test_default_model_section_keeps_its_run_config_defaults():
    args = architecture_args(ModelConfig())
    assert args["booster_kind"] == "dcn" and args["sparse_min_rows"] == 4096
    assert "sharing" not in args
