"""One run of an ablation: train (or reuse) it, then score the test split with its nets.

A run directory is the trainer's ``RUN/`` layout (``training.loop.run_files``)
plus ``test_scores.npz``, written by the ablation after training:

* ``light`` — float64 ``[N]``, the run's light-net logits on the test split;
* ``booster`` — float64 ``[N]``, its booster's (two-stage KD, and a run that froze
  its booster with ``distill.teacher_stop``: the frozen teacher's);
* ``label`` — float64 ``[N]``, the test labels (0/1);
* ``group`` — int64 ``[N]``, the test request ids (``EncodedSplit.group``),
  the unit the bootstrap resamples;
* ``representable`` (optional) — float64 ``[N]``, the representable teacher's
  logits: the run's booster (two-stage KD: the frozen teacher's) scored on the
  test rows with position fixed and every privileged cross feature at its
  train-time pair mean (``training.ablate.representable``); absent for
  ``light_alone`` and when the task has no privileged features.

Rows are in test-split order, the same for every run of one ablation, so two
runs' scores pair row by row.

``reuse`` keeps a finished run only when its stored ``config.json`` equals the
record this run would write; otherwise :func:`check_reusable` refuses it and
names the differing keys.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.joint import JointModel
from training.ablate.representable import booster_logits_on
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.loop.build import load_trained_model
from training.loop.errors import TrainingError
from training.loop.evaluation import predict
from training.loop.options import TrainOptions
from training.loop.run_files import CONFIG_FILE, METRICS_FILE, TEACHER_FILE
from training.loop.trainer import train

SCORES_FILE = "test_scores.npz"
_MISSING = "<missing>"


@dataclass(frozen=True)
class RunScores:
    """The test-split logits of one run (see the module docstring for the arrays)."""

    light: np.ndarray
    booster: np.ndarray
    label: np.ndarray
    group: np.ndarray
    representable: np.ndarray | None = None

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {"light": self.light, "booster": self.booster}
        arrays |= {"label": self.label, "group": self.group}
        if self.representable is not None:
            arrays["representable"] = self.representable
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RunScores:
        with np.load(path, allow_pickle=False) as z:
            rep = z["representable"] if "representable" in z.files else None
            return cls(z["light"], z["booster"], z["label"], z["group"], rep)


@dataclass(frozen=True)
class RunOutcome:
    """What one finished run gives the report.

    Attributes:
        metrics: the run's ``metrics.json``.
        scores: its test scores, or None for a tuning trial (no test split).
        reused: the run was kept from an earlier ablation, not trained now.
    """

    metrics: dict[str, Any]
    scores: RunScores | None
    reused: bool


def config_record(cfg: RunConfig, data: PreparedData, options: TrainOptions) -> dict[str, Any]:
    """What the trainer writes to ``RUN/config.json`` for this run (the keys compared on reuse)."""
    return {
        **cfg.to_dict(),
        "data_dir": str(data.data_dir) if data.data_dir else None,
        "label": data.label,
        "epochs_requested": options.epochs or cfg.optim.epochs,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_differences(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The dotted keys of ``expected`` whose stored value differs, as ``key (stored → now)``.

    Keys the trainer records beyond ``expected`` are ignored; a key of
    ``expected`` that ``stored`` lacks counts as a difference. Lists compare
    by value, so a tuple and its JSON list are equal.
    """
    flat_stored = _flatten(json.loads(json.dumps(stored)))
    flat_expected = _flatten(json.loads(json.dumps(expected)))
    return [
        f"{key} ({flat_stored.get(key, _MISSING)!r} → {value!r})"
        for key, value in flat_expected.items()
        if flat_stored.get(key, _MISSING) != value
    ]


def check_reusable(run_dir: Path, expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``metrics.json`` of a finished run that may be reused, None when unfinished.

    Raises:
        TrainingError: the run finished under another config (names the keys)
            or has no ``config.json`` to compare.
    """
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.exists():
        return None
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise TrainingError(f"--reuse: {run_dir} has {METRICS_FILE} but no {CONFIG_FILE}")
    diffs = config_differences(json.loads(config_path.read_text()), expected)
    if diffs:
        raise TrainingError(
            f"--reuse: {config_path} differs from the config this ablation would train: "
            + "; ".join(diffs)
            + ". Remove the run directory or drop --reuse to train it again."
        )
    return json.loads(metrics_path.read_text())


def score_test(
    model: JointModel,
    data: PreparedData,
    batch_size: int,
    teacher: JointModel | None = None,
    representable: Mapping[str, Tensor] | None = None,
) -> RunScores:
    """Light and booster logits of ``model`` on the test split (two-stage KD: the teacher's).

    Args:
        representable: the test features made (user, item)-representable
            (:func:`training.ablate.representable.representable_features`); when
            given, the booster (two-stage KD: the teacher's) is also scored on them.
    """
    if data.test is None or not len(data.test):
        raise TrainingError("the ablation needs a test split to score every run on the same rows")
    logits = predict(model, data.test, batch_size, booster_source=teacher)
    rep = None
    if representable is not None:
        source = teacher if teacher is not None else model
        rep = booster_logits_on(source, representable, len(data.test), batch_size)
    return RunScores(
        light=logits["light"],
        booster=logits["booster"],
        label=data.test.labels[data.label].double().numpy(),
        group=data.test.group.numpy().astype(np.int64),
        representable=rep,
    )


def frozen_teacher(
    run_dir: Path, model: JointModel, metrics: Mapping[str, Any]
) -> JointModel | None:
    """The run's frozen teacher (``distill.teacher_stop``), rebuilt from ``RUN/teacher.pt``.

    After the freeze the shared tables keep training from the light side, so the
    final model's booster reads tables its frozen teacher never saw: the booster
    the light net learned from is the snapshot, and that is the one to score
    (as the trainer's own evaluation does). None when the run froze no teacher.
    """
    record = metrics.get("teacher_stop") or {}
    path = run_dir / TEACHER_FILE
    if not record.get("frozen") or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    teacher = copy.deepcopy(model)
    teacher.load_state_dict(state)
    return teacher.eval()


def _same_rows(scores: RunScores, data: PreparedData) -> bool:
    assert data.test is not None
    label = data.test.labels[data.label].double().numpy()
    group = data.test.group.numpy()
    return (
        scores.label.shape == label.shape
        and np.array_equal(scores.label, label)
        and np.array_equal(scores.group, group)
    )


def run_one(
    cfg: RunConfig,
    data: PreparedData,
    run_dir: Path,
    options: TrainOptions,
    *,
    teacher_dir: Path | None = None,
    reuse: bool = False,
    score: bool = True,
    representable: Mapping[str, Tensor] | None = None,
) -> RunOutcome:
    """Train one run (or reuse it) and score the test split with its nets.

    Args:
        cfg: the variant's run config (seed included).
        data: the prepared splits; for a tuning trial, without a test split.
        run_dir: the run directory.
        options: loop options (``options.epochs`` is expected unset: the
            ablation writes the epochs into ``cfg``).
        teacher_dir: the ``booster_alone`` run whose frozen booster two-stage
            KD distils.
        reuse: keep a finished run whose ``config.json`` matches (else refuse).
        score: write and return ``test_scores.npz`` (False for tuning trials).
        representable: the representable test features (see :func:`score_test`);
            None for a run without a trained booster (``light_alone``).

    Raises:
        TrainingError: reuse refused, no test split to score, training failed.
    """
    teacher = load_trained_model(teacher_dir) if teacher_dir is not None else None
    metrics = check_reusable(run_dir, config_record(cfg, data, options)) if reuse else None
    if metrics is not None and metrics.get("train_rows") != len(data.train):
        # config.json does not record --max-rows; the row count does
        raise TrainingError(
            f"--reuse: {run_dir / METRICS_FILE} differs from the run this ablation would train: "
            f"train_rows ({metrics.get('train_rows')!r} → {len(data.train)!r})"
        )
    model: JointModel | None = None
    reused = metrics is not None
    if metrics is None:
        started = time.perf_counter()
        result = train(cfg, data, run_dir, options, teacher=teacher)
        metrics = result.metrics
        metrics["wall_seconds"] = time.perf_counter() - started
        model = result.model
    if not score:
        return RunOutcome(metrics, None, reused)
    path = run_dir / SCORES_FILE
    if reused and path.exists():
        scores = RunScores.load(path)
        complete = representable is None or scores.representable is not None
        if _same_rows(scores, data) and complete:
            return RunOutcome(metrics, scores, reused)
    if model is None:
        model = load_trained_model(run_dir)
    if teacher is None:
        teacher = frozen_teacher(run_dir, model, metrics)
    scores = score_test(model, data, cfg.data.eval_batch_size, teacher, representable)
    scores.save(path)
    return RunOutcome(metrics, scores, reused)


__all__ = [
    "SCORES_FILE",
    "RunOutcome",
    "RunScores",
    "check_reusable",
    "config_differences",
    "config_record",
    "frozen_teacher",
    "run_one",
    "score_test",
]
