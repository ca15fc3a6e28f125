"""Runs and artifacts written before the issue-12 restructuring still work.

``tests/fixtures/legacy/`` was written by the flat ``training/`` layout (see its
README): a run directory and one exported fine artifact. The new code must load
the run through the one run loader, resume its checkpoint, and the artifact must
load and score as it did.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.contract.artifact import load_artifact
from tests.helpers.repo import ROOT
from training.config.run import RunConfig
from training.data.data_dir import find_data_files
from training.data.prepare import prepare_data
from training.data.readers import read_columns
from training.data.schema import load_schema
from training.evaluate import auc
from training.export.parity import held_out_rows
from training.export.run_loader import load_run
from training.loop.build import load_trained_model
from training.loop.checkpoint import Position, load_checkpoint
from training.loop.options import TrainOptions
from training.loop.trainer import train

LEGACY = ROOT / "tests" / "fixtures" / "legacy"
QUIET = TrainOptions(progress=False, threads=1, checkpoint_every=0, resume=True)
# keys train() adds to config.json next to the run config itself
RECORD_KEYS = ("data_dir", "label", "epochs_requested")


@pytest.fixture
def legacy_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture (resuming writes into the run directory)."""
    shutil.copytree(LEGACY / "run", tmp_path / "run")
    shutil.copytree(LEGACY / "data", tmp_path / "data")
    return tmp_path


def _stored_metrics() -> dict:
    return json.loads((LEGACY / "run" / "metrics.json").read_text())


def _config() -> RunConfig:
    record = json.loads((LEGACY / "run" / "config.json").read_text())
    return RunConfig.from_dict({k: v for k, v in record.items() if k not in RECORD_KEYS})


def test_legacy_run_loads_and_its_light_net_reproduces_the_stored_test_auc():
    run = dataclasses.replace(load_run(LEGACY / "run"), data_dir=LEGACY / "data")
    rows = held_out_rows(run, rows=10_000)
    assert rows is not None and rows.labels is not None
    with torch.inference_mode():
        logits = run.model(rows.features).double().numpy()
    assert auc(rows.labels.numpy(), logits) == pytest.approx(_stored_metrics()["light"]["auc"])
    # the trainer's loader is the same loader
    teacher = load_trained_model(LEGACY / "run")
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[name]), name


def test_legacy_config_json_loads_into_the_same_run_config():
    ckpt = load_checkpoint(LEGACY / "run" / "checkpoint.pt")
    # keys added since (with their defaults) are absent from the stored dict
    assert RunConfig.from_dict(ckpt["config"]) == _config()


def test_legacy_checkpoint_resumes_to_the_stored_model(legacy_copy: Path):
    cfg = _config()
    data = prepare_data(legacy_copy / "data", cfg, cache=False)
    result = train(cfg, data, legacy_copy / "run", QUIET)
    stored = torch.load(LEGACY / "run" / "model.pt", map_location="cpu", weights_only=True)
    # the checkpoint is at the end of the only epoch: resuming trains nothing more
    assert result.position == Position(1, 0, 8)
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, stored["model"][name]), name
    assert result.metrics["light"] == pytest.approx(_stored_metrics()["light"], nan_ok=True)


def test_legacy_checkpoint_continues_for_another_epoch(legacy_copy: Path):
    cfg = _config()
    data = prepare_data(legacy_copy / "data", cfg, cache=False)
    result = train(cfg, data, legacy_copy / "run", dataclasses.replace(QUIET, epochs=2))
    assert result.metrics["steps"] == 16
    assert result.position == Position(2, 0, 16)
    stored = torch.load(LEGACY / "run" / "model.pt", map_location="cpu", weights_only=True)
    moved = [
        n for n, v in result.model.state_dict().items() if not torch.equal(v, stored["model"][n])
    ]
    assert moved, "a second epoch must change the weights"
    records = [
        json.loads(x) for x in (legacy_copy / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(r["step"] for r in records) == 16


def test_legacy_artifact_loads_and_scores_raw_rows():
    # written before artifacts were signed
    artifact = load_artifact(LEGACY / "repo" / "fine" / "current", allow_unsigned=True)
    assert artifact.manifest.kind == "mlp" and artifact.manifest.stage == "fine"
    files = find_data_files(LEGACY / "data")
    schema = load_schema(files.schema)
    columns = read_columns(files.splits["test"], schema)
    served = list(artifact.encoder.specs)
    with torch.inference_mode():
        logits = artifact.module(artifact.encode(columns, names=served)).double().numpy()
    labels = np.asarray(columns[schema.task("ctr").label], dtype=np.float64)
    assert logits.shape == labels.shape and np.isfinite(logits).all()
    stored = artifact.manifest.metrics["export"]["test_auc"]["exported"]
    assert auc(labels, logits) == pytest.approx(stored)
