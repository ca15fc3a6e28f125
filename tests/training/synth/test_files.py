"""The synthetic log on disk: files, row groups, schema, stats.json and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import training.synth.generator as synth
from models.contract.feature_spec import Side
from models.contract.features import FeatureEncoder
from rocketrank.cli import main as rocketrank
from training.data.schema import Schema, load_schema
from training.evaluate import auc
from training.synth import config as synth_config
from training.synth.config import SPLITS
from training.synth.labels import LOGIT_TERMS
from training.synth.log_schema import (
    INTERACTED_FEATURES,
    POST_CLICK_FEATURES,
    schema_dict,
    schema_yaml,
)

ROWS = 12_000
FILES = ("train", "valid", "test", "users", "items")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.write(out, rows=ROWS, seed=3)
    return out


def test_row_group_size_is_the_streaming_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert synth_config.ROW_GROUP_ROWS == 65_536
    monkeypatch.setattr(synth_config, "ROW_GROUP_ROWS", 1_000)
    synth.write(tmp_path, rows=3_000, seed=1, users=200, items=150)
    meta = pq.ParquetFile(tmp_path / "train.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [1_000, 1_000, 400]


def test_files_round_trip_with_int64_ids_and_list_tags(out_dir: Path) -> None:
    for name in FILES:
        assert (out_dir / f"{name}.parquet").is_file(), name
    frames = synth.generate(ROWS, seed=3)
    for name in FILES:
        back = pd.read_parquet(out_dir / f"{name}.parquet")
        assert list(back.columns) == list(frames[name].columns), name
        assert back.shape == frames[name].shape, name
    arrow = pq.read_schema(out_dir / "train.parquet")
    for col in ("request_id", "user_id", "item_id", "shop_id", "brand_id", "category_id", "ts"):
        assert str(arrow.field(col).type) == "int64", col
    assert str(pq.read_schema(out_dir / "items.parquet").field("tags").type).startswith("list")
    train = pd.read_parquet(out_dir / "train.parquet")
    pd.testing.assert_series_equal(train["p_click"], frames["train"]["p_click"])


def test_schema_loads_and_marks_privileged_features(out_dir: Path) -> None:
    schema = load_schema(out_dir / "schema.yaml")
    assert (schema.ids.request, schema.ids.user, schema.ids.item, schema.ids.timestamp) == (
        "request_id",
        "user_id",
        "item_id",
        "ts",
    )
    served, privileged = schema.task_features("ctr")
    assert set(INTERACTED_FEATURES) <= set(privileged)
    # post-click features are nonzero exactly on clicked rows: invisible to every CTR model
    assert not set(POST_CLICK_FEATURES) & (set(served) | set(privileged))
    assert {f.side for f in schema.features if f.name in served} <= {
        Side.USER,
        Side.ITEM,
        Side.CONTEXT,
    }
    cvr = schema.task("cvr")
    assert cvr.where == "click"
    _, cvr_privileged = schema.task_features("cvr")
    assert set(POST_CLICK_FEATURES) | set(INTERACTED_FEATURES) <= set(cvr_privileged)
    train = pd.read_parquet(out_dir / "train.parquet")
    assert set(schema.required_columns()) <= set(train.columns)


def test_schema_encodes_the_log_through_the_feature_contract(out_dir: Path) -> None:
    schema = load_schema(out_dir / "schema.yaml")
    train = pd.read_parquet(out_dir / "train.parquet")
    test = pd.read_parquet(out_dir / "test.parquet")
    encoder = FeatureEncoder(schema.features).fit({c: train[c] for c in schema.feature_names})
    encoded = encoder.transform({c: test[c] for c in schema.feature_names})
    assert encoded["tags"].shape == (len(test), 5)
    assert (encoded["tags"][:, 0] >= 2).all()  # every item has at least one tag
    assert encoded["user_id"].dtype == np.int64
    for name in ("user_cat_clicks_7d", "dwell_time_s", "price"):
        assert np.isfinite(encoded[name]).all()


def test_stats_json_matches_the_files(out_dir: Path) -> None:
    stats = json.loads((out_dir / "stats.json").read_text())
    parts = {name: pd.read_parquet(out_dir / f"{name}.parquet") for name in FILES}
    log = pd.concat([parts[s] for s in SPLITS], ignore_index=True)
    assert stats["rows"] == len(log) == ROWS
    assert stats["splits"] == {s: len(parts[s]) for s in SPLITS}
    assert stats["users"] == len(parts["users"]) and stats["items"] == len(parts["items"])
    assert stats["ctr"] == pytest.approx(log["click"].mean(), abs=1e-6)
    clicks = log["click"].sum()
    assert stats["cvr"] == pytest.approx(log["conversion"].sum() / clicks, abs=1e-6)
    test = parts["test"]
    assert stats["oracle_auc_click"] == pytest.approx(auc(test["click"], test["p_click"]), abs=1e-6)
    clicked = test[test["click"] == 1]
    expected = auc(clicked["conversion"], clicked["p_conversion"])
    if np.isnan(expected):  # a small test split may hold no conversion: JSON null, not NaN
        assert stats["oracle_auc_conversion"] is None
    else:
        assert stats["oracle_auc_conversion"] == pytest.approx(expected, abs=1e-6)
    assert 0.5 < stats["oracle_auc_click_no_position"] < 1.0
    assert set(stats["click_logit_std"]) == set(LOGIT_TERMS)
    assert stats["seconds"] >= 0


def test_cli_writes_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    code = rocketrank(
        ["synth", "--out", str(out), "--rows", "2000", "--seed", "5", "--users", "300"]
    )
    assert code == 0
    assert "wrote 2,000 impressions" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == 2_000 and stats["users"] == 300 and stats["seed"] == 5


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = rocketrank(["synth", "--out", str(tmp_path / "x"), "--rows", "5"])
    assert code == 2
    assert "rows must be" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert rocketrank(["synth", "--out", str(a_file), "--rows", "1000"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_written_schema_is_the_documented_one(out_dir: Path) -> None:
    text = (out_dir / "schema.yaml").read_text()
    assert text == schema_yaml()
    assert load_schema(out_dir / "schema.yaml") == Schema.from_dict(schema_dict())


def test_same_arguments_write_identical_bytes(tmp_path: Path) -> None:
    for run in ("a", "b"):
        synth.write(tmp_path / run, rows=1_500, seed=9, users=100, items=80)
    for name in (*FILES, "schema"):
        suffix = "yaml" if name == "schema" else "parquet"
        a = (tmp_path / "a" / f"{name}.{suffix}").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.{suffix}").read_bytes(), name
