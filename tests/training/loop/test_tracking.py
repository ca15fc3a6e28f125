"""Run tracking: TensorBoard event files and MLflow runs read back with their own readers.

Every value is checked against what the run wrote to ``metrics.jsonl`` /
``metrics.json`` (TensorBoard stores float32, hence the relative 1e-6).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.data.prepare import PreparedData, prepare_data
from training.loop import tracking
from training.loop.mlflow_run import MLFLOW_RUN_FILE
from training.loop.options import TrainOptions
from training.loop.tracking import Tracking, param_values, tag_name
from training.loop.trainer import train

F32 = 1e-6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, PreparedData]:
    cfg = tiny_config("rocket", epochs=2)
    data_dir = write_tiny_data(tmp_path_factory.mktemp("tracking") / "data", rows=2_000)
    return cfg, prepare_data(data_dir, cfg)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite tracking store for the module (creating its tables takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("warm-up", artifact_location=str(root / "warm-up"))
    return uri


def _options(**kw: Any) -> TrainOptions:
    return TrainOptions(progress=False, threads=1, checkpoint_every=0, **kw)


def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: a step logged twice: {steps}"
    return {e.step: e.value for e in events}


def test_tensorboard_scalars_are_the_runs_records(prepared, tmp_path: Path) -> None:
    cfg, data = prepared
    run_dir = tmp_path / "run"
    result = train(cfg, data, run_dir, _options(tracking=Tracking()))
    acc = _events(run_dir / "tensorboard")
    steps, evals = _records(run_dir, "step"), _records(run_dir, "eval")
    assert len(steps) == result.metrics["steps"] and len(evals) == 2

    assert _scalars(acc, "train/loss/total") == {
        r["step"]: pytest.approx(r["loss"]["loss"], rel=F32) for r in steps
    }
    for term in ("light_bce", "booster_bce", "hint"):
        assert _scalars(acc, f"train/loss/{term}") == {
            r["step"]: pytest.approx(r["loss"][term], rel=F32) for r in steps
        }
    assert _scalars(acc, "train/lambda") == {
        r["step"]: pytest.approx(r["lambda"], rel=F32) for r in steps
    }
    assert _scalars(acc, "train/samples_per_second") == {
        r["step"]: pytest.approx(r["samples_per_second"], rel=F32) for r in steps
    }
    # per epoch: the mean of the epoch's step records, at its last step
    for epoch in (0, 1):
        mine = [r for r in steps if r["epoch"] == epoch]
        mean = sum(r["loss"]["light_bce"] for r in mine) / len(mine)
        got = _scalars(acc, "epoch/loss/light_bce")
        assert got[mine[-1]["step"]] == pytest.approx(mean, rel=F32)
    for net in ("light", "booster"):
        for metric in ("auc", "logloss", "ndcg@10"):
            assert _scalars(acc, f"valid/{net}/{tag_name(metric)}") == {
                r["step"]: pytest.approx(r[net][metric], rel=F32) for r in evals
            }
            final = _scalars(acc, f"test/{net}/{tag_name(metric)}")
            assert final == {result.metrics["steps"]: pytest.approx(result.metrics[net][metric])}
    hparams = _events(run_dir / "tensorboard" / "hparams")
    assert hparams.Scalars("hparam/test/light/auc")[0].value == pytest.approx(
        result.metrics["light"]["auc"], rel=F32
    )


def test_a_resumed_run_purges_the_steps_it_redoes(prepared, tmp_path: Path) -> None:
    """A crash after the last checkpoint: the steps logged since are re-done and shown once."""
    cfg, data = prepared
    run_dir = tmp_path / "run"
    train(cfg, data, run_dir, _options(tracking=Tracking(), stop_after_steps=3))
    saved = run_dir / "at_step_3.pt"
    shutil.copy(run_dir / "checkpoint.pt", saved)
    resumed = _options(tracking=Tracking(), resume=True)
    train(cfg, data, run_dir, _options(tracking=Tracking(), resume=True, stop_after_steps=6))
    shutil.copy(saved, run_dir / "checkpoint.pt")  # the crash: steps 4..6 were never saved
    result = train(cfg, data, run_dir, resumed)

    acc = _events(run_dir / "tensorboard")
    steps = _records(run_dir, "step")
    assert [r["step"] for r in steps] == list(range(1, result.metrics["steps"] + 1))
    assert _scalars(acc, "train/loss/total") == {
        r["step"]: pytest.approx(r["loss"]["loss"], rel=F32) for r in steps
    }
    # epoch 0's mean covers its steps from before and after the resume
    epoch0 = [r for r in steps if r["epoch"] == 0]
    mean = sum(r["loss"]["loss"] for r in epoch0) / len(epoch0)
    assert _scalars(acc, "epoch/loss/total")[epoch0[-1]["step"]] == pytest.approx(mean, rel=F32)


def test_mlflow_run_holds_params_epoch_metrics_final_metrics_and_files(
    prepared, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    cfg, data = prepared
    run_dir = tmp_path / "run"
    tracking_options = Tracking(tensorboard=False, mlflow_uri=mlflow_uri, experiment="params")
    result = train(cfg, data, run_dir, _options(tracking=tracking_options))
    assert not (run_dir / "tensorboard").exists()

    client = MlflowClient(mlflow_uri)
    run_id = json.loads((run_dir / MLFLOW_RUN_FILE).read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params == {k: str(v) for k, v in param_values(config).items()}
    assert run.data.params["optim.lr_dense"] == str(cfg.optim.lr_dense)

    evals = _records(run_dir, "eval")
    history = client.get_metric_history(run_id, "valid/light/auc")
    assert {m.step: m.value for m in history} == {r["step"]: r["light"]["auc"] for r in evals}
    assert run.data.metrics["test/booster/auc"] == result.metrics["booster"]["auc"]
    assert run.data.metrics["test/light/logloss"] == result.metrics["light"]["logloss"]
    steps = [r for r in _records(run_dir, "step") if r["epoch"] == 1]
    mean = sum(r["loss"]["hint"] for r in steps) / len(steps)
    assert run.data.metrics["epoch/loss/hint"] == pytest.approx(mean, rel=1e-12)
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.json", "curves.png"} <= files
    local = client.download_artifacts(run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == result.metrics


def test_interrupted_then_resumed_run_continues_its_mlflow_run(
    prepared, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, data = prepared
    run_dir = tmp_path / "run"
    track = Tracking(tensorboard=False, mlflow_uri=mlflow_uri, experiment="resume")
    train(cfg, data, run_dir, _options(tracking=track, stop_after_steps=4))
    client = MlflowClient(mlflow_uri)
    run_id = json.loads((run_dir / MLFLOW_RUN_FILE).read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    train(cfg, data, run_dir, _options(tracking=track, resume=True))
    experiment = client.get_experiment_by_name("resume")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["rocketrank.resumed_at_step"] == "4"


def test_without_tensorboardx_training_works_and_says_so_once(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, data = prepared
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
    monkeypatch.setattr(tracking, "_hint_given", False)
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        first = train(cfg, data, tmp_path / "a", _options(tracking=Tracking(), epochs=1))
        train(cfg, data, tmp_path / "b", _options(tracking=Tracking(), epochs=1))
    hints = [r.getMessage() for r in caplog.records if "rocketrank[track]" in r.getMessage()]
    assert len(hints) == 1 and "--no-tensorboard" in hints[0]
    assert (tmp_path / "a" / "metrics.json").exists() and first.metrics["light"]["auc"] > 0
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_a_fresh_run_drops_an_earlier_runs_events_and_mlflow_link(prepared, tmp_path: Path) -> None:
    cfg, data = prepared
    run_dir = tmp_path / "run"
    train(cfg, data, run_dir, _options(tracking=Tracking(), epochs=1))
    (run_dir / MLFLOW_RUN_FILE).write_text('{"tracking_uri": "x", "run_id": "old"}')
    train(cfg, data, run_dir, _options(epochs=1))  # untracked: nothing of the first remains
    assert not (run_dir / "tensorboard").exists()
    assert not (run_dir / MLFLOW_RUN_FILE).exists()


class _BrokenBackend:
    """A backend whose server goes away after the first epoch (raises from then on)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def step(self, values: Any, step: int) -> None:
        pass

    def epoch(self, values: Any, step: int) -> None:
        self.epochs.append(step)
        if len(self.epochs) > 1:
            raise ConnectionError("tracking server unreachable")

    def finish(self, params: Any, final: Any, step: int) -> None:
        raise AssertionError("a dropped backend is not called again")

    flush = step
    close = step


def test_a_backend_failing_mid_run_is_dropped_and_the_log_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = _BrokenBackend()
    tracker = tracking.RunTracker([broken], steps_per_epoch=2, params={})
    records = [
        {"kind": "step", "step": s, "epoch": (s - 1) // 2, "batch": (s - 1) % 2, "lambda": 1.0,
         "loss": {"loss": 1.0 / s}, "samples_per_second": 10.0}
        for s in range(1, 7)
    ]  # fmt: skip
    with (
        caplog.at_level(logging.WARNING, logger=tracking.__name__),
        tracker,
        open(tmp_path / "metrics.jsonl", "w") as raw,
    ):
        log_file = tracker.mirror(raw)
        for rec in records:
            log_file.write(json.dumps(rec) + "\n")
        tracker.finish({"split": "test", "light": {"auc": 0.6}, "booster": {}}, 6)
    assert broken.epochs == [2, 4]  # the epoch at step 4 failed; nothing reached it after
    assert tracker.writers == []
    assert "ConnectionError: tracking server unreachable" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == len(records)
