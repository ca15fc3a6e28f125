"""The MLflow side of run tracking: one MLflow run per training run, kept across resumes.

A tracked run records which MLflow run it is in ``RUN/mlflow_run.json``
(``{"tracking_uri", "run_id"}``), so ``train --resume`` continues the same MLflow
run and ``export --mlflow`` attaches the exported artifact's manifest to the
run that trained it (:func:`log_export`).

MLflow comes from ``rocketrank[track]`` (``mlflow-skinny``); any tracking URI it
takes works (``sqlite:///mlflow.db``, ``http://host:5000``, ...).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.loop.checkpoint import atomic_write_text
from training.loop.errors import TrainingError
from training.loop.run_files import CONFIG_FILE, CURVES_FILE, METRICS_FILE
from training.loop.tracking import (
    ENABLE_HINT,
    MLFLOW_RUN_FILE,
    Tracking,
    numeric,
    param_values,
)

log = logging.getLogger(__name__)


def require_mlflow() -> None:
    """Import MLflow (without touching any store).

    Raises:
        TrainingError: MLflow is not installed.
    """
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise TrainingError(f"--mlflow needs MLflow: {ENABLE_HINT}") from exc


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` (a new sqlite store gets its tables here).

    Raises:
        TrainingError: MLflow is not installed.
    """
    require_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing.

    A new experiment in a local sqlite store keeps its artifacts beside the
    database (``DIR/mlartifacts/``), not in ``./mlruns`` of whatever directory
    the command ran from.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    uri = str(client.tracking_uri)
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def stored_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run id ``RUN/mlflow_run.json`` holds for tracking URI ``uri``."""
    path = run_dir / MLFLOW_RUN_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored["run_id"] if stored.get("tracking_uri") == uri else None


def start_run(client: Any, tracking: Tracking, name: str, tags: Mapping[str, str]) -> str:
    """A new MLflow run (nested under ``tracking.parent_run_id`` when set); its id."""
    tags = {**tags, **tracking.tags}
    if tracking.parent_run_id:
        tags["mlflow.parentRunId"] = tracking.parent_run_id
    run = client.create_run(experiment_id(client, tracking.experiment), run_name=name, tags=tags)
    return str(run.info.run_id)


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """``params`` flattened (``optim.lr_dense``, ...) as the run's MLflow params."""
    from mlflow.entities import Param

    flat = param_values(params)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(flat.items())])


def log_metrics(client: Any, run_id: str, values: Mapping[str, float], step: int) -> None:
    """``values`` as MLflow metrics at ``step``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
    client.log_batch(run_id, metrics=metrics)


class MlflowWriter:
    """A training run's MLflow run: params at the start, epoch and final metrics, files."""

    def __init__(self, client: Any, run_id: str, run_dir: Path) -> None:
        self.client, self.run_id, self.run_dir = client, run_id, run_dir

    @classmethod
    def open(
        cls, tracking: Tracking, run_dir: Path, params: Mapping[str, Any], resumed_at: int | None
    ) -> MlflowWriter:
        """Continue the run's MLflow run (a resume) or start one and log ``params``.

        Raises:
            TrainingError: MLflow missing, or the tracking server refused.
        """
        assert tracking.mlflow_uri
        client = mlflow_client(tracking.mlflow_uri)
        try:
            run_id = stored_run_id(run_dir, tracking.mlflow_uri) if resumed_at is not None else None
            if run_id is not None:
                client.update_run(run_id, status="RUNNING")
                client.set_tag(run_id, "rocketrank.resumed_at_step", str(resumed_at))
                return cls(client, run_id, run_dir)
            name = tracking.run_name or (
                "/".join(run_dir.parts[-2:]) if tracking.parent_run_id else run_dir.name
            )
            tags = {"rocketrank.run_dir": str(run_dir.resolve())}
            run_id = start_run(client, tracking, name, tags)
            record = {"tracking_uri": tracking.mlflow_uri, "run_id": run_id}
            atomic_write_text(run_dir / MLFLOW_RUN_FILE, json.dumps(record) + "\n")
            log_params(client, run_id, params)
        except Exception as exc:  # MlflowException, or the server's connection error
            raise TrainingError(f"MLflow at {tracking.mlflow_uri!r}: {exc}") from exc
        return cls(client, run_id, run_dir)

    def step(self, values: Mapping[str, float], step: int) -> None:
        """Per-step scalars stay in TensorBoard (one MLflow write per step is too slow)."""

    def epoch(self, values: Mapping[str, float], step: int) -> None:
        log_metrics(self.client, self.run_id, values, step)

    def finish(self, params: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        log_metrics(self.client, self.run_id, final, step)
        for name in (METRICS_FILE, CONFIG_FILE, CURVES_FILE):
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))

    def flush(self) -> None:
        """Every call already reached the tracking server."""

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def log_export(
    uri: str, run_dir: Path, artifact_dir: Path, *, experiment: str = "rocketrank"
) -> str:
    """Log an exported artifact's manifest to the MLflow run that trained it; the run id.

    The training run's MLflow run is the one ``RUN/mlflow_run.json`` names for
    ``uri``; without one, a new run ``export NAME/VERSION`` is made. The manifest
    (and its signature) go under the artifact path ``export/NAME/VERSION``; the
    manifest's export metrics (test AUC, parity) become metrics.

    Raises:
        TrainingError: MLflow missing, or the tracking server refused.
    """
    client = mlflow_client(uri)
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    model = f"{manifest['name']}/{manifest['version']}"
    try:
        run_id = stored_run_id(run_dir, uri)
        created = run_id is None
        if run_id is None:
            tags = {"rocketrank.run_dir": str(run_dir.resolve())}
            run_id = start_run(client, Tracking(experiment=experiment), f"export {model}", tags)
        for name in ("manifest.json", "manifest.sig"):
            if (artifact_dir / name).exists():
                client.log_artifact(run_id, str(artifact_dir / name), f"export/{model}")
        client.set_tag(run_id, "rocketrank.exported", model)
        export = manifest.get("metrics", {}).get("export", {})
        values = numeric(export.get("test_auc") or {}, "export/test_auc")
        if values:
            log_metrics(client, run_id, values, 0)
        if created:
            client.set_terminated(run_id, "FINISHED")
    except Exception as exc:  # MlflowException, or the server's connection error
        raise TrainingError(f"MLflow at {uri!r}: {exc}") from exc
    return run_id


__all__ = [
    "MlflowWriter",
    "experiment_id",
    "log_export",
    "log_metrics",
    "log_params",
    "mlflow_client",
    "require_mlflow",
    "start_run",
    "stored_run_id",
]
