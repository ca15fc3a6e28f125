"""The one loader of a finished run directory (what ``rocketrank train`` wrote).

``load_run`` gives the exporter everything (model, encoder, config, metrics);
``load_model`` only the model, for a two-stage KD teacher
(``training.loop.build.load_trained_model``). Both read ``RUN/model.pt``: a
``weights_only``-loadable dict with ``model`` (the state dict) and
``model_args`` (``JointModelArgs.to_dict()``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.contract.features import FeatureEncoder
from models.joint import JointModel
from models.joint_args import JointModelArgs
from training.export.errors import ExportError
from training.loop.run_files import CONFIG_FILE, ENCODER_FILE, METRICS_FILE, STATE_DICT_FILE


class RunLoadError(ExportError):
    """The run directory has no usable ``model.pt`` (or another file is broken)."""


@dataclass
class TrainedRun:
    """A trained run as the exporter needs it.

    Attributes:
        path: the run directory.
        model: the joint model with the trained weights, eval mode.
        encoder: the run's fitted encoder (all features).
        task: training task name.
        stage: ``coarse`` or ``fine``.
        metrics: the run's evaluation metrics (``metrics.json``).
        data_dir: the run's data directory (``None`` when not recorded or gone).
        config: the run's resolved config (plain dict).
    """

    path: Path
    model: JointModel
    encoder: FeatureEncoder
    task: str
    stage: str
    metrics: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"run {path.parent}: {path.name} is missing") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"run {path.parent}: {path.name} is not JSON: {exc}") from exc


def _read_state_dict_file(path: Path) -> Mapping[str, Any]:
    if not path.is_dir():
        raise RunLoadError(f"run {path}: not a directory")
    model_file = path / STATE_DICT_FILE
    if not model_file.is_file():
        raise RunLoadError(f"run {path}: {STATE_DICT_FILE} is missing (did training finish?)")
    blob = torch.load(model_file, map_location="cpu", weights_only=True)
    if not isinstance(blob, Mapping) or "model" not in blob or "model_args" not in blob:
        raise RunLoadError(f"run {path}: {STATE_DICT_FILE} must hold 'model' and 'model_args'")
    return blob


def _rebuild(path: Path, blob: Mapping[str, Any]) -> JointModel:
    try:
        model = JointModel(JointModelArgs.from_dict(blob["model_args"]))
        model.load_state_dict(blob["model"])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise RunLoadError(
            f"run {path}: {STATE_DICT_FILE} does not rebuild the model: {exc}"
        ) from exc
    return model.eval()


def load_model(run_dir: str | Path) -> JointModel:
    """The trained joint model of a run directory, eval mode.

    Raises:
        RunLoadError: ``model.pt`` is missing or does not rebuild the model.
    """
    path = Path(run_dir)
    return _rebuild(path, _read_state_dict_file(path))


def load_run(run_dir: str | Path) -> TrainedRun:
    """Load a trained run directory (``docs/INTERNALS.md``, "Trainer → export").

    Expects ``model.pt`` (a ``weights_only``-loadable dict with ``model``: the
    state dict and ``model_args``: ``JointModelArgs.to_dict()``), ``encoder.json``,
    ``metrics.json`` and ``config.json`` (the resolved run config with ``task``,
    ``stage`` and ``data_dir``).

    Raises:
        ExportError: naming the missing or invalid file.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ExportError(f"run {path}: not a directory")
    blob = _read_state_dict_file(path)
    model = _rebuild(path, blob)
    encoder = FeatureEncoder.load(str(path / ENCODER_FILE))
    config = _read_json(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    metrics = _read_json(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else {}
    task = str(config.get("task", blob.get("task", "ctr")))
    stage = str(config.get("stage") or ("coarse" if model.two_tower else "fine"))
    data = config.get("data_dir")
    data_dir = Path(data) if isinstance(data, str) and data else None
    return TrainedRun(path, model, encoder, task, stage, metrics, data_dir, config)


__all__ = ["RunLoadError", "TrainedRun", "load_model", "load_run"]
