"""Run tracking: TensorBoard event files and MLflow runs, fed from the run's step log.

The loop writes every record to ``RUN/metrics.jsonl``; :meth:`RunTracker.mirror`
wraps that file so each record written is also handed, parsed back, to the
trackers. What TensorBoard and MLflow show is therefore metrics.jsonl's values.

TensorBoard (``RUN/tensorboard/``, the ``tensorboardX`` writer of ``rocketrank[track]``;
every x axis is the global optimiser step, so TensorBoard never purges a tag as
out of order):

* ``train/loss/<term>`` (``total``, ``light_bce``, ``booster_bce``, ``hint``),
  ``train/lambda`` (the hint weight), ``train/samples_per_second`` — every step record;
* ``epoch/loss/<term>`` (mean of the epoch's step records), ``epoch/samples_per_second``
  — at each epoch's last step;
* ``valid/<net>/<metric>`` — every end-of-epoch validation record;
* ``<split>/<net>/<metric>`` (``split`` = test, else valid) and ``light_calibrated/...``
  — the final metrics, at the last step; with the resolved config flattened as
  hparams (``RUN/tensorboard/hparams/``).

A resumed run purges the events after its checkpoint (``purge_step``), as
``metrics.jsonl`` drops their records.

MLflow (``--mlflow URI``, ``mlflow-skinny``; :mod:`training.loop.mlflow_run`):
params are ``config.json`` flattened, metrics the epoch and validation scalars
above (at the global step) and the final ones, artifacts ``metrics.json``,
``config.json`` and ``curves.png``. Only rank 0 of a distributed run tracks.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from training.loop.run_files import CONFIG_FILE, read_log

if TYPE_CHECKING:
    from training.loop.run_context import Run

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"
ENABLE_HINT = "pip install 'rocketrank[track]'"
_hint_given = False


@dataclass(frozen=True)
class Tracking:
    """Where a run is tracked (``TrainOptions.tracking``; None tracks nothing).

    Attributes:
        tensorboard: write TensorBoard event files (skipped, with one hint, when
            ``tensorboardX`` is not installed).
        tensorboard_dir: where (default ``RUN/tensorboard``).
        mlflow_uri: MLflow tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``,
            ...); None = no MLflow.
        experiment: MLflow experiment name.
        run_name: MLflow run name (default: the run directory's name; under a
            parent run, its last two path parts, e.g. ``pfd/seed0``).
        parent_run_id: MLflow run this one nests under (an ablation's).
        tags: MLflow tags of the run.
    """

    tensorboard: bool = True
    tensorboard_dir: Path | None = None
    mlflow_uri: str | None = None
    experiment: str = "rocketrank"
    run_name: str | None = None
    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class Writer(Protocol):
    """One tracking backend, as :class:`RunTracker` drives it."""

    def step(self, values: Mapping[str, float], step: int) -> None: ...

    def epoch(self, values: Mapping[str, float], step: int) -> None: ...

    def finish(self, params: Mapping[str, Any], final: Mapping[str, float], step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str) -> None: ...


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and other leaves stay as they are."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def tag_name(name: str) -> str:
    """``name`` as a TensorBoard tag and MLflow metric name: ``ndcg@10`` -> ``ndcg_at_10``."""
    return re.sub(r"[^-/\w.]", "_", name.replace("@", "_at_"))


def numeric(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of ``tree`` flattened with ``/`` (booleans as 0/1)."""
    out: dict[str, float] = {}
    for name, value in flatten(tree, prefix, "/").items():
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[tag_name(name)] = float(value)
    return out


def param_values(tree: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """``tree`` flattened with ``.``, every leaf a scalar (lists and None as JSON)."""
    return {
        k: v if isinstance(v, str | int | float | bool) else json.dumps(v)
        for k, v in flatten(tree).items()
    }


def tensorboard_writer(logdir: Path, purge_step: int | None = None) -> Any | None:
    """A ``tensorboardX.SummaryWriter`` on ``logdir``; None (and one hint) without it."""
    global _hint_given
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        if not _hint_given:
            _hint_given = True
            log.warning(
                "TensorBoard event files are off: tensorboardX is not installed (%s to "
                "enable them, or --no-tensorboard to silence this)",
                ENABLE_HINT,
            )
        return None
    # the file name holds whole seconds only: a resume within the same second would
    # overwrite the interrupted run's file, and TensorBoard reads files in name order
    suffix = f".{time.time_ns():020d}"
    return SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=30, filename_suffix=suffix)


class TensorBoard:
    """Scalars of a run into ``RUN/tensorboard``; the final metrics also as hparams."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    step = epoch = _scalars

    def finish(self, params: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self._scalars(final, step)
        self.writer.add_hparams(
            param_values(params), {f"hparam/{k}": v for k, v in final.items()}, name="hparams"
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def step_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A ``"kind": "step"`` record's TensorBoard scalars."""
    values = numeric(_loss_terms(record["loss"]), "train/loss")
    values["train/lambda"] = float(record["lambda"])
    values["train/samples_per_second"] = float(record["samples_per_second"])
    return values


def final_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metrics.json``'s per-net metrics as ``<split>/<net>/<metric>`` (+ calibration)."""
    split = metrics["split"]
    values = numeric({net: metrics[net] for net in ("light", "booster")}, split)
    if metrics.get("light_calibrated"):
        values |= numeric(metrics["light_calibrated"]["after"], "light_calibrated")
    keys = ("train_seconds", "train_cpu_seconds", "samples_per_second")
    return values | numeric({k: metrics.get(k) for k in keys}, "run")


class RunTracker:
    """The trackers of one run; feed it records with :meth:`record` (or :meth:`mirror`).

    Use as a context manager: leaving it after :meth:`finish` ends the tracked
    run as finished, leaving it on an exception as failed, otherwise (a
    deliberate ``stop_after_steps`` interruption) as killed, resumable.

    A backend that fails mid-run (tracking server gone, disk full) is dropped
    with a warning naming it: tracking never stops the training it watches.
    """

    def __init__(
        self, writers: list[Writer], steps_per_epoch: int, params: Mapping[str, Any]
    ) -> None:
        self.writers = writers
        self.steps_per_epoch = steps_per_epoch
        self.params = params
        self._epoch_records: list[Mapping[str, Any]] = []
        self._finished = False

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._finished:
            status = "FINISHED"
        else:
            status = "FAILED" if exc_type and exc_type is not KeyboardInterrupt else "KILLED"
        self._each("close", status)

    def mirror(self, log_file: TextIO) -> TextIO:
        """``log_file`` whose records also reach the trackers (itself when none is on)."""
        return _MirroredLog(log_file, self) if self.writers else log_file

    def resume_from(self, records: list[Mapping[str, Any]], epoch: int) -> None:
        """Seed the epoch means with the kept step records of ``epoch`` (a resumed run)."""
        self._epoch_records = [r for r in records if r["kind"] == "step" and r["epoch"] == epoch]

    def record(self, rec: Mapping[str, Any]) -> None:
        """One metrics.jsonl record: a step record, or an end-of-epoch eval record."""
        if not self.writers:
            return
        if rec.get("kind") == "step":
            self._each("step", step_scalars(rec), rec["step"])
            self._epoch_records.append(rec)
            if rec["batch"] == self.steps_per_epoch - 1:
                self._end_epoch(rec["epoch"], rec["step"])
        elif rec.get("kind") == "eval":
            nets = {k: v for k, v in rec.items() if isinstance(v, Mapping)}
            values = numeric(nets, rec.get("split", "valid"))
            if "teacher_frozen" in rec:
                values["valid/teacher_frozen"] = float(rec["teacher_frozen"])
            self._each("epoch", values, rec["step"])

    def _end_epoch(self, epoch: int, step: int) -> None:
        records = [r for r in self._epoch_records if r["epoch"] == epoch]
        self._epoch_records = []
        losses = [_loss_terms(r["loss"]) for r in records]
        terms = sorted({t for loss in losses for t in loss})
        values = numeric(
            {t: _mean([loss[t] for loss in losses if t in loss]) for t in terms}, "epoch/loss"
        )
        values["epoch/samples_per_second"] = float(records[-1]["samples_per_second"])
        self._each("epoch", values, step)

    def flush(self) -> None:
        self._each("flush")

    def finish(self, metrics: Mapping[str, Any], step: int) -> None:
        """The final metrics (``metrics.json``'s content) at the last step."""
        self._each("finish", self.params, final_scalars(metrics), step)
        self._finished = True

    def _each(self, method: str, *args: Any) -> None:
        """``writer.method(*args)`` for every writer; one that raises is dropped."""
        for writer in list(self.writers):
            try:
                getattr(writer, method)(*args)
            except Exception as exc:  # the backend's own errors: the training goes on
                log.warning(
                    "run tracking: %s failed in %s (%s: %s); the run goes on without it",
                    type(writer).__name__, method, type(exc).__name__, exc,
                )  # fmt: skip
                self.writers.remove(writer)


class _MirroredLog:
    """A text file whose complete JSON lines are also :meth:`RunTracker.record`-ed."""

    def __init__(self, file: TextIO, tracker: RunTracker) -> None:
        self.file, self.tracker, self._pending = file, tracker, ""

    def write(self, text: str) -> int:
        written = self.file.write(text)
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.tracker.record(json.loads(line))
        return written

    def flush(self) -> None:
        self.file.flush()
        self.tracker.flush()


def _loss_terms(loss: Mapping[str, float]) -> dict[str, float]:
    """A step record's loss terms, the total (``"loss"``) named ``total``."""
    return {("total" if k == "loss" else k): v for k, v in loss.items()}


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def run_params(run_dir: Path) -> dict[str, Any]:
    """``config.json`` of the run (the resolved config plus data_dir, label, epochs)."""
    path = run_dir / CONFIG_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def open_tracker(run: Run) -> RunTracker:
    """The run's tracker (no writers when ``options.tracking`` is None or not rank 0).

    Raises:
        TrainingError: MLflow asked for and not installed, or its server refused.
    """
    tracking = run.options.tracking
    params = run_params(run.run_dir)
    if run.dist.is_main and not run.options.resume:
        # a fresh run: an earlier run's events and MLflow run are not this one's
        shutil.rmtree(run.run_dir / TENSORBOARD_DIR, ignore_errors=True)
        (run.run_dir / MLFLOW_RUN_FILE).unlink(missing_ok=True)
    if tracking is None or not run.dist.is_main:
        return RunTracker([], run.steps_per_epoch, params)
    writers: list[Writer] = []
    resumed_at = run.position.step if run.options.resume else None
    if tracking.tensorboard:
        logdir = tracking.tensorboard_dir or run.run_dir / TENSORBOARD_DIR
        # the resumed run re-does (and re-logs) every step after its checkpoint's
        purge = resumed_at + 1 if resumed_at is not None else None
        writer = tensorboard_writer(logdir, purge)
        if writer is not None:
            writers.append(TensorBoard(writer))
    if tracking.mlflow_uri:
        from training.loop.mlflow_run import MlflowWriter

        writers.append(MlflowWriter.open(tracking, run.run_dir, params, resumed_at))
    tracker = RunTracker(writers, run.steps_per_epoch, params)
    if resumed_at is not None:
        tracker.resume_from(read_log(run.log_path), run.position.epoch)
    return tracker


__all__ = [
    "ENABLE_HINT",
    "MLFLOW_RUN_FILE",
    "TENSORBOARD_DIR",
    "RunTracker",
    "TensorBoard",
    "Tracking",
    "final_scalars",
    "flatten",
    "numeric",
    "open_tracker",
    "param_values",
    "step_scalars",
    "tag_name",
    "tensorboard_writer",
]
