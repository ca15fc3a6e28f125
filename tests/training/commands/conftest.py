"""A tiny trained and exported fine model (real trainer, real export) shared by the
eval, predict and sample-request tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rocketrank.cli import main
from tests.helpers.trainer import tiny_config, write_tiny_data


@pytest.fixture(scope="session")
def exported_fine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"data", "repo", "run"}``: a synthetic log, a one-epoch fine run, its export."""
    root = tmp_path_factory.mktemp("exported_fine")
    data = write_tiny_data(root / "data", rows=4_000)
    config = root / "fine.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1).to_dict()))
    run, repo = root / "run", root / "repo"
    argv = ["train", "--config", str(config), "--data", str(data), "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    assert main(["export", "--run", str(run), "--repo", str(repo), "--name", "fine"]) == 0
    return {"data": data, "repo": repo, "run": run}
