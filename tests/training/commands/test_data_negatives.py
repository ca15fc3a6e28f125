"""``rocketrank data negatives``: a positives-only log becomes a valid, trainable one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from rocketrank.cli import main
from tests.helpers.data import SCHEMA, make_log, write_frame
from training.data.loader import load_dataset


def _positives_dir(root: Path) -> Path:
    root.mkdir()
    schema = {**SCHEMA, "ids": {"user": "user_id", "item": "item_id"}}
    (root / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    for i, split in enumerate(("train", "valid", "test")):
        df = make_log(120, i, n_users=10, n_items=40).drop(columns=["request_id"])
        df["click"] = 1
        df["conversion"] = 1
        write_frame(df, root / f"{split}.parquet")
    return root


def test_negatives_command_writes_a_trainable_directory(tmp_path: Path, capsys) -> None:
    src = _positives_dir(tmp_path / "pos")
    out = tmp_path / "neg"
    assert main(["data", "negatives", "--data", str(src), "--out", str(out),
                 "--per-positive", "3"]) == 0  # fmt: skip
    train = pd.read_parquet(out / "train.parquet")
    assert len(train) == 4 * 120
    assert train["click"].sum() == 120  # the positives keep label 1, negatives are 0
    # the positives-only log cannot train (constant label); the new one passes the check
    assert main(["data", "check", "--data", str(src), "--task", "ctr"]) != 0
    assert main(["data", "check", "--data", str(out), "--task", "ctr"]) == 0
    data = load_dataset(out, tasks=["ctr"])
    split = data.split("train", task="ctr")
    # no request id in the log: ranking metrics group by user
    assert (split.group.numpy() == split.user.numpy()).all()
    capsys.readouterr()


def test_negatives_command_refuses_an_existing_output(tmp_path: Path) -> None:
    src = _positives_dir(tmp_path / "pos")
    out = tmp_path / "neg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "negatives", "--data", str(src), "--out", str(out)]) == 2
    assert (out / "keep.txt").read_text() == "mine"
