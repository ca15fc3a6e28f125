"""Run tracking through the CLI: train / ablate / export with TensorBoard and ``--mlflow``.

Read back with TensorBoard's EventAccumulator and MLflow's client on a local
sqlite tracking store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rocketrank.cli import main
from tests.helpers.distributed import run_cli
from tests.helpers.trainer import tiny_config, write_tiny_data
from training.loop.mlflow_run import MLFLOW_RUN_FILE


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tracking_cli")
    config = root / "fine.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1, batch_size=512).to_dict()))
    return {"root": root, "data": write_tiny_data(root / "data", rows=1_500), "config": config}


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def _train(setup: dict[str, Path], out: Path, *extra: str) -> int:
    argv = ["train", "--config", str(setup["config"]), "--data", str(setup["data"])]
    return main([*argv, "--out", str(out), "--no-progress", *extra])


def _events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_train_writes_tensorboard_by_default_and_not_with_no_tensorboard(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    assert _train(setup, tmp_path / "on") == 0
    tags = _events(tmp_path / "on" / "tensorboard").Tags()["scalars"]
    assert {"train/loss/total", "train/lambda", "valid/light/auc", "test/light/auc"} <= set(tags)
    assert _train(setup, tmp_path / "off", "--no-tensorboard") == 0
    assert not (tmp_path / "off" / "tensorboard").exists()
    assert (tmp_path / "off" / "metrics.json").exists()


def test_mlflow_without_mlflow_installed_fails_before_reading_data(
    setup: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    argv = ["train", "--config", str(setup["config"]), "--data", str(tmp_path / "no-data")]
    assert main([*argv, "--out", str(tmp_path / "run"), "--mlflow", "sqlite:///x.db"]) == 2
    err = capsys.readouterr().err
    assert "--mlflow needs MLflow" in err and "rocketrank[track]" in err
    assert not (tmp_path / "run").exists()


def test_export_logs_the_manifest_to_the_run_that_trained_it(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    uri, run, repo = _uri(tmp_path), tmp_path / "run", tmp_path / "repo"
    assert _train(setup, run, "--mlflow", uri, "--mlflow-experiment", "fine") == 0
    run_id = json.loads((run / MLFLOW_RUN_FILE).read_text())["run_id"]
    export = ["export", "--run", str(run), "--repo", str(repo), "--name", "fine", "--unsigned"]
    assert main([*export, "--mlflow", uri]) == 0

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fine")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    version = (repo / "fine" / "current").resolve().name
    exported = client.get_run(run_id).data.tags["rocketrank.exported"]
    assert exported == f"fine/{version}"
    local = client.download_artifacts(run_id, f"export/fine/{version}/manifest.json", ".")
    manifest = (repo / "fine" / version / "manifest.json").read_text()
    assert Path(local).read_text() == manifest
    assert client.get_run(run_id).data.metrics["test/light/auc"] == pytest.approx(
        json.loads(manifest)["metrics"]["light"]["auc"], abs=0
    )

    # a run trained without --mlflow: the manifest gets a run of its own
    assert _train(setup, tmp_path / "plain", "--no-tensorboard") == 0
    plain = ["export", "--run", str(tmp_path / "plain"), "--repo", str(repo), "--name", "other"]
    assert main([*plain, "--unsigned", "--mlflow", uri]) == 0
    default = client.get_experiment_by_name("rocketrank")
    (new,) = client.search_runs([default.experiment_id])
    assert new.info.run_name.startswith("export other/") and new.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(new.info.run_id, "export/other")] == [
        f"export/other/{(repo / 'other' / 'current').resolve().name}"
    ]


@pytest.mark.slow
def test_ablate_nests_its_runs_under_one_mlflow_run_and_writes_its_table(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri, out = _uri(tmp_path), tmp_path / "abl"
    code = main([
        "ablate", "--config", str(setup["config"]), "--data", str(setup["data"]),
        "--out", str(out), "--variants", "light_alone", "rocket", "--n-boot", "50",
        "--no-progress", "--mlflow", uri, "--mlflow-experiment", "abl",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("abl").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert set(children) == {"light_alone/seed0", "rocket/seed0"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert parent.data.params["ablation.seeds"] == "1"
    rocket = next(r for r in report["rows"] if r["variant"] == "rocket")
    assert parent.data.metrics["rocket/light_auc/mean"] == rocket["light_auc"]["mean"]
    delta = parent.data.metrics["rocket/delta_vs_light_alone/mean"]
    assert delta == rocket["delta_vs_light_alone"]["mean"]
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.json", "report.png"} <= files
    seed_run = json.loads((out / "rocket" / "seed0" / MLFLOW_RUN_FILE).read_text())
    assert seed_run["run_id"] == children["rocket/seed0"].info.run_id

    acc = _events(out / "tensorboard")
    (text,) = acc.Tensors("ablation/report/text_summary")
    assert text.tensor_proto.string_val[0].decode() == (out / "report.md").read_text()
    hparams = _events(out / "tensorboard" / "hparams" / "rocket")
    value = hparams.Scalars("ablation/light_auc/mean")[0].value
    assert value == pytest.approx(rocket["light_auc"]["mean"], rel=1e-6)
    assert (out / "rocket" / "seed0" / "tensorboard").is_dir()


@pytest.mark.slow
def test_two_processes_track_from_rank_zero_only(setup: dict[str, Path], tmp_path: Path) -> None:
    uri, run = _uri(tmp_path), tmp_path / "run"
    argv = ["train", "--config", str(setup["config"]), "--data", str(setup["data"])]
    proc = run_cli([*argv, "--out", str(run), "--nproc", "2", "--no-progress", "--mlflow", uri])
    assert proc.returncode == 0, proc.stderr[-3000:]
    event_files = sorted(p.name for p in (run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
    client = MlflowClient(uri)
    (only,) = client.search_runs([client.get_experiment_by_name("rocketrank").experiment_id])
    assert only.info.status == "FINISHED"
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = _events(run / "tensorboard").Scalars("train/loss/total")
    assert [e.step for e in logged] == [r["step"] for r in steps if r["kind"] == "step"]
