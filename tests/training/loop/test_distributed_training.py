"""N processes train the single-process model: parity and cross-world-size resume.

Both tests launch real torchrun workers (gloo, CPU) on a few thousand synthetic
rows. The global batch (255 rows) does not divide by the world size and the
last batch is short, so the per-rank weighting of gradients is exercised;
gradient clipping, weight decay, sparse tables and early-stopping bookkeeping
are on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.helpers.distributed import WORKER_MODULE, run_cli, run_torchrun
from tests.helpers.trainer import tiny_config, write_tiny_data
from training.config.run import RunConfig
from training.data.prepare import prepare_data
from training.loop.checkpoint import load_checkpoint
from training.loop.options import TrainOptions
from training.loop.trainer import train

pytestmark = pytest.mark.slow

EPOCHS = 2
PARAM_TOL = 1e-5
METRIC_TOL = 1e-6


def _config() -> RunConfig:
    return tiny_config(
        "rocket",
        epochs=EPOCHS,
        batch_size=255,
        optim={"max_grad_norm": 1.0, "weight_decay": 0.01, "early_stopping_patience": 3},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Data, config file and the single-process reference run."""
    root = tmp_path_factory.mktemp("dist")
    data_dir = write_tiny_data(root / "data", rows=3000)
    cfg = _config()
    cfg_path = root / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    ref = train(
        cfg,
        prepare_data(data_dir, cfg),
        root / "single",
        TrainOptions(progress=False, threads=1, checkpoint_every=0),
    )
    assert not ref.interrupted
    return {
        "root": root,
        "data": data_dir,
        "cfg": cfg,
        "cfg_path": cfg_path,
        "ref": root / "single",
    }


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["model"]


def assert_same_parameters(run: Path, ref: Path) -> None:
    got, want = _params(run), _params(ref)
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= PARAM_TOL, f"largest parameter difference {worst:.3g}"


def assert_same_metrics(run: Path, ref: Path) -> None:
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((ref / "metrics.json").read_text())
    for net in ("light", "booster"):
        assert got[net].keys() == want[net].keys()
        for name, value in want[net].items():
            assert got[net][name] == pytest.approx(value, abs=METRIC_TOL), (net, name)
    for key in ("steps", "epochs", "train_rows", "batch_size", "best_epoch", "split", "params"):
        assert got[key] == want[key], key


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_the_single_process_model(setup: dict[str, Any]) -> None:
    out = setup["root"] / "two"
    argv = ["train", "--config", str(setup["cfg_path"]), "--data", str(setup["data"])]
    proc = run_cli([*argv, "--out", str(out), "--nproc", "2", "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1  # rank 0 alone reports

    assert_same_parameters(out, setup["ref"])
    # metrics over the union of both ranks' predictions = the whole test split's
    assert_same_metrics(out, setup["ref"])
    # every logged step is the global batch's loss, every eval the whole valid split's
    got, want = _log(out), _log(setup["ref"])
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    for g, w in zip(got, want, strict=True):
        if g["kind"] == "step":
            assert g["loss"] == pytest.approx(w["loss"], abs=1e-5)
        else:
            assert g["light"]["auc"] == pytest.approx(w["light"]["auc"], abs=METRIC_TOL)
            assert g["booster"]["logloss"] == pytest.approx(w["booster"]["logloss"], abs=1e-6)


def test_checkpoint_of_two_processes_resumes_in_one(setup: dict[str, Any]) -> None:
    out = setup["root"] / "resumed"
    spec = setup["root"] / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "config": str(setup["cfg_path"]),
                "data": str(setup["data"]),
                "out": str(out),
                "epochs": EPOCHS,
                "stop_after_steps": 13,  # mid second epoch (10 batches per epoch)
            }
        )
    )
    proc = run_torchrun(2, ["-m", WORKER_MODULE, str(spec)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["position"] == {"epoch": 1, "batch": 3, "step": 13}
    assert not (out / "model.pt").exists()

    cfg = setup["cfg"]
    result = train(
        cfg,
        prepare_data(setup["data"], cfg),
        out,
        TrainOptions(resume=True, progress=False, threads=1, checkpoint_every=0),
    )
    assert not result.interrupted and result.metrics["steps"] == EPOCHS * 10
    assert_same_parameters(out, setup["ref"])
    assert_same_metrics(out, setup["ref"])
