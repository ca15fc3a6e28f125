"""`rocketrank eval`: the exported artifact's metrics on a split or a log file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.contract.manifest import read_manifest
from models.contract.repository import ModelRepository
from rocketrank.cli import main


def test_eval_reproduces_the_manifest_test_auc(
    exported_fine: dict[str, Path], tmp_path: Path
) -> None:
    repo = exported_fine["repo"]
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", f"{repo}/fine", "--data", str(exported_fine["data"]),
                 "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    manifest = read_manifest(ModelRepository(repo).resolve_current("fine"))
    exported_auc = manifest.metrics["export"]["test_auc"]["exported"]
    # the parity rows are the first 50,000 test rows: the whole test split here
    assert manifest.metrics["export"]["parity"]["rows"] == result["metrics"]["rows"]
    assert result["metrics"]["auc"] == pytest.approx(exported_auc, abs=1e-6)
    # and the trainer's own test metrics of the light net, through the exported module
    trained = manifest.metrics["light"]
    for key in ("auc", "gauc", "logloss", "ndcg@10", "map@5"):
        assert result["metrics"][key] == pytest.approx(trained[key], abs=1e-5), key


def test_eval_by_version_and_on_a_log_file_agree(exported_fine: dict[str, Path]) -> None:
    repo = exported_fine["repo"]
    version = ModelRepository(repo).current_version("fine")
    data = exported_fine["data"]
    by_dir = tmp = data.parent / "by_dir.json"
    by_file = data.parent / "by_file.json"
    assert main(["eval", "--model", f"{repo}/fine@{version}", "--data", str(data),
                 "--split", "valid", "--json", str(tmp)]) == 0  # fmt: skip
    assert main(["eval", "--model", f"{repo}/fine", "--data", str(data / "valid.parquet"),
                 "--json", str(by_file)]) == 0  # fmt: skip
    a, b = json.loads(by_dir.read_text()), json.loads(by_file.read_text())
    assert a["model"] == b["model"] == f"fine@{version}"
    assert a["metrics"] == b["metrics"] and math.isfinite(a["metrics"]["auc"])


def test_eval_names_what_to_fix(
    exported_fine: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, data = exported_fine["repo"], str(exported_fine["data"])
    assert main(["eval", "--model", f"{repo}/nope", "--data", data]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["eval", "--model", f"{repo}/fine@20000101T000000Z", "--data", data]) == 2
    err = capsys.readouterr().err
    assert "no version 20000101T000000Z" in err and "versions:" in err
    assert main(["eval", "--model", f"{repo}/fine", "--data", data + "_missing"]) == 2
    assert "data directory not found" in capsys.readouterr().err
