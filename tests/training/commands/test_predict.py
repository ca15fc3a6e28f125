"""`rocketrank predict`: streamed batch scoring through the exported artifact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.contract.artifact import load_artifact
from models.contract.repository import ModelRepository
from rocketrank.cli import main
from training.data.readers import read_columns
from training.data.schema import load_schema
from training.offline.scoring import score_columns


def test_predict_streams_every_row_in_order_with_the_served_scores(
    exported_fine: dict[str, Path], tmp_path: Path
) -> None:
    data, repo = exported_fine["data"], exported_fine["repo"]
    log = data / "test.parquet"
    out = tmp_path / "scores.parquet"
    # a chunk far smaller than the file: several reads, several writes
    assert main(["predict", "--model", f"{repo}/fine", "--data", str(log), "--out", str(out),
                 "--chunk-rows", "97", "--no-progress"]) == 0  # fmt: skip
    scored = pq.read_table(out)
    source = pq.read_table(log, columns=["user_id", "item_id", "request_id"])
    assert scored.num_rows == source.num_rows
    assert scored.column_names == ["user_id", "item_id", "request_id", "logit", "score"]
    for column in ("user_id", "item_id", "request_id"):
        assert scored[column].equals(source[column].cast("int64"))
    artifact = load_artifact(
        ModelRepository(repo).resolve_current("fine"),
        public_key=os.environ["ROCKETRANK_ARTIFACT_PUBLIC_KEY"],
    )
    columns = read_columns(log, load_schema(data / "schema.yaml"))
    whole = score_columns(artifact, columns).astype(np.float32)
    np.testing.assert_array_equal(scored["logit"].to_numpy(), whole)
    score = scored["score"].to_numpy()
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-whole.astype(np.float64))), rtol=1e-6)
    assert not list(tmp_path.glob(".*partial"))


def test_predict_refuses_bad_input_without_leaving_output(
    exported_fine: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, repo = exported_fine["data"], exported_fine["repo"]
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", f"{repo}/fine", "--data", str(data / "absent.parquet"),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "--data" in capsys.readouterr().err
    assert main(["predict", "--model", f"{repo}/fine", "--data", str(data / "test.parquet"),
                 "--out", str(tmp_path / "scores.csv")]) == 2  # fmt: skip
    assert "--out" in capsys.readouterr().err
    assert not out.exists()


def test_sample_request_has_a_real_user_and_real_items(
    exported_fine: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = exported_fine["data"]
    assert main(["sample-request", "--data", str(data), "--stage", "cascade",
                 "--candidates", "30", "--top-k", "5"]) == 0  # fmt: skip
    body = json.loads(capsys.readouterr().out)
    users = set(pq.read_table(data / "users.parquet", columns=["user_id"])["user_id"].to_pylist())
    items = set(pq.read_table(data / "items.parquet", columns=["item_id"])["item_id"].to_pylist())
    assert body["user_id"] in users
    assert len(body["candidates"]) == 30 and set(body["candidates"]) <= items
    assert body["stage"] == "cascade" and body["top_k"] == 5 and body["coarse_top_k"] >= 5
    assert body["context"] and all(v is None or isinstance(v, int | float | str)
                                   for v in body["context"].values())  # fmt: skip
    assert main(["sample-request", "--data", str(data), "--stage", "fine"]) == 0
    assert "coarse_top_k" not in json.loads(capsys.readouterr().out)
