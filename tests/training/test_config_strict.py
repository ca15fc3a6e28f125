"""The run config on pydantic: strict types for every field, errors naming the full key,
the defaults and ``to_dict`` of the hand-written loader it replaced, and the JSON Schema
for editors (current, and agreeing with the loader)."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helpers.repo import ROOT
from training.config.distill_section import DistillConfig
from training.config.errors import ConfigError
from training.config.run import RunConfig
from training.config.schema import SCHEMA_FILE, SECTIONS, run_config_schema, schema_text

# RunConfig.from_dict({"task": "ctr"}).to_dict() as the hand-written loader wrote it
# (key order included: config.json files of older runs hold exactly this).
DEFAULTS = {
    "task": "ctr",
    "stage": "fine",
    "seed": 0,
    # shard_by_rank came after the pydantic move (issue 17); config.json files without it
    # load with its default (tests/training/test_legacy_layout.py)
    "data": {
        "batch_size": 1024,
        "eval_batch_size": 8192,
        "chunk_rows": 0,
        "shuffle_unit": "rows",
        "shard_by_rank": False,
    },
    "model": {
        "light": "mlp",
        "light_dims": [64, 32],
        "tower_scale": 10.0,
        "learn_scale": True,
        "tower_bias": False,
        "booster": "dcn",
        "booster_dims": [512, 256, 128],
        "cross_layers": 3,
        "cross_rank": 0,
        "dcn_structure": "stacked",
        "norm": "none",
        "dropout": 0.0,
        "embedding_dims": {},
        "sharing": "full",
        "separate_tables": [],
        "sparse": False,
        "sparse_min_rows": 4096,
        "detach_shared_for_light": False,
    },
    "distill": {
        "variant": "rocket",
        "hint": None,
        "lambda": None,
        "schedule": "constant",
        "warmup_steps": 0,
        "warmup_epochs": 0.0,
        "temperature": 1.0,
        "gradient_block": None,
        "teacher_stop": "never",
        "teacher_patience": 1,
        "teacher_max_epochs": 0,
        "teacher_pretrain_epochs": 0,
    },
    "optim": {
        "lr_dense": 0.001,
        "lr_sparse": 0.01,
        "weight_decay": 0.0,
        "epochs": 1,
        "early_stopping_patience": 0,
        "max_grad_norm": 0.0,
    },
}


def test_defaults_and_to_dict_are_the_old_loaders() -> None:
    out = RunConfig.from_dict({"task": "ctr"}).to_dict()
    assert json.dumps(out) == json.dumps(DEFAULTS)  # same keys, order, values and types
    sections = {"data": None, "model": None, "distill": None, "optim": None}
    assert RunConfig.from_dict({"task": "ctr", **sections}).to_dict() == DEFAULTS


def test_ints_for_floats_are_read_as_floats() -> None:
    cfg = RunConfig.from_dict({"task": "ctr", "distill": {"lambda": 1}, "optim": {"lr_dense": 1}})
    assert cfg.to_dict()["distill"]["lambda"] == 1.0
    assert isinstance(cfg.distill.lam, float) and isinstance(cfg.optim.lr_dense, float)


# values a lax parser would coerce to the field's type; the run config refuses each
COERCIBLE: dict[type, list[Any]] = {
    bool: [1, 0, "true", "False", "yes"],
    int: ["3", 3.0, True],
    float: ["0.5", True],
    str: [3, True],
}


def _base(tp: Any) -> Any:
    """``int`` for ``Annotated[int, ...]``, ``Annotated[int, ...] | None`` and the like."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _scalar_fields() -> list[tuple[str, type]]:
    """(YAML path, scalar type) of every bool/int/float/str field of the run config."""
    sections: dict[str, type] = {"": RunConfig}
    for name, info in RunConfig.__pydantic_fields__.items():
        if dataclasses.is_dataclass(_base(info.annotation)):
            sections[info.alias or name] = _base(info.annotation)
    out = []
    for section, cls in sections.items():
        for name, info in cls.__pydantic_fields__.items():
            key, tp = info.alias or name, _base(info.annotation)
            if tp in COERCIBLE:
                out.append((f"{section}.{key}" if section else key, tp))
    return out


@pytest.mark.parametrize(("path", "tp"), _scalar_fields(), ids=lambda v: str(v))
def test_every_scalar_field_is_strict(path: str, tp: type) -> None:
    section, _, key = path.rpartition(".")
    for value in COERCIBLE[tp]:
        data: dict[str, Any] = {"task": "ctr", **({section: {key: value}} if section else {})}
        if not section:
            data[key] = value
        with pytest.raises(ConfigError, match=rf"(^|; ){re.escape(path)}: must be "):
            RunConfig.from_dict(data)


def test_the_sweep_covers_every_section() -> None:
    paths = {p for p, _ in _scalar_fields()}
    assert {"seed", "task", "data.batch_size", "model.sparse", "distill.lambda"} <= paths
    assert {p.rpartition(".")[0] for p in paths} == {"", "data", "model", "distill", "optim"}


def test_every_error_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(
            {"task": "ctr", "optim": {"epochs": 0, "lr": 1}, "model": {"booster_dims": [8, "x"]}}
        )
    message = str(caught.value)
    assert "optim.epochs: must be > 0, got 0" in message
    assert "optim.lr: unknown key; allowed: ['early_stopping_patience'," in message
    assert "model.booster_dims[1]: must be an integer, got str 'x'" in message


def test_files_use_the_yaml_key_and_code_the_field_name() -> None:
    with pytest.raises(ConfigError, match=r"distill\.lam: unknown key; allowed: .*'lambda'"):
        RunConfig.from_dict({"task": "ctr", "distill": {"lam": 0.5}})
    distill = dataclasses.replace(DistillConfig(), lam=0.25)
    written = RunConfig(task="ctr", distill=distill).to_dict()["distill"]
    assert distill.lam == 0.25 and written["lambda"] == 0.25 and "lam" not in written


def test_building_or_replacing_in_code_is_validated_like_the_file() -> None:
    cfg = RunConfig.from_dict({"task": "ctr"})
    with pytest.raises(ConfigError, match=r"^optim\.epochs: must be > 0, got 0$"):
        dataclasses.replace(cfg.optim, epochs=0)
    with pytest.raises(ConfigError, match=r"^model\.light_dims\[1\]: must be > 0"):
        dataclasses.replace(cfg.model, light_dims=(8, 0))
    with pytest.raises(ConfigError, match=r"^seed: must be an integer, got str '1'$"):
        dataclasses.replace(cfg, seed="1")
    with pytest.raises(ConfigError, match=r"^distill\.teacher_max_epochs: only with"):
        dataclasses.replace(cfg.distill, teacher_max_epochs=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE == ROOT / "configs" / "run_config.schema.json"
    assert SCHEMA_FILE.read_text() == schema_text(), "run: python -m training.config.schema"


def test_schema_describes_every_key() -> None:
    schema = run_config_schema()
    nodes = [schema] + [d for d in schema["$defs"].values() if "properties" in d]
    assert len(nodes) == len(SECTIONS)
    for node in nodes:
        assert node["additionalProperties"] is False
        for key, prop in node["properties"].items():
            assert prop.get("description"), f"{node.get('title')}.{key}"
    distill = schema["$defs"]["DistillConfig"]["properties"]
    assert "lambda" in distill and "lam" not in distill


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_the_editor_schema(path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), run_config_schema())


@pytest.mark.parametrize(
    "data",
    [
        {"task": "ctr", "distill": {"lamda": 0.5}},
        {"task": "ctr", "distill": {"gradient_block": "False"}},
        {"task": "ctr", "model": {"light_dims": [8, 0]}},
        {"task": "ctr", "model": {"light": "gbdt"}},
        {"task": "ctr", "optim": {"epochs": 0}},
        {"task": "ctr", "data": {"batch_size": "8"}},
        {"stage": "fine"},
    ],
)
def test_schema_and_loader_reject_the_same_mistakes(data: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, run_config_schema())
    with pytest.raises(ConfigError):
        RunConfig.from_dict(data)
