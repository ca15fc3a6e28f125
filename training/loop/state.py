"""What a run carries from step to step: the early-stopping records and the counters.

All are checkpointed under the ``trainer`` key of ``checkpoint.pt`` as one flat
dict (``best_value``, ``best_epoch``, ``bad_evals``, ``stopped_early``,
``train_seconds``, ``train_cpu_seconds``, ``samples``), the same keys the
trainer wrote before these dataclasses existed, so old checkpoints resume; the
booster's own record (``distill.teacher_stop``) is the nested ``teacher`` dict
(absent in older checkpoints: a teacher that was never frozen).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class EarlyStopping:
    """The best validation value so far and how many evaluations since it.

    Attributes:
        metric: ``auc`` (higher is better) or ``logloss`` (lower is better).
        patience: stop after this many evaluations without a better value (0 = never).
        best_value: the best value seen, None before the first finite one.
        best_epoch: the epoch it was seen at.
        bad_evals: evaluations since the best one.
        stopped_early: patience ran out.
    """

    metric: Literal["auc", "logloss"] = "auc"
    patience: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (never for NaN/inf)."""
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.metric == "auc" else value < self.best_value

    def record(self, value: float, epoch: int) -> bool:
        """Book one validation value; True when it is the new best."""
        if self.improves(value):
            self.best_value, self.best_epoch, self.bad_evals = value, epoch, 0
            return True
        self.bad_evals += 1
        if self.patience > 0 and self.bad_evals >= self.patience:
            self.stopped_early = True
        return False


@dataclass
class TeacherStop:
    """The booster's own early stopping (``distill.teacher_stop: best_valid``).

    Attributes:
        early: the booster's validation record; ``stopped_early`` is unused
            (the freeze is ``frozen``).
        frozen: the booster was restored to its best-validation state
            (``RUN/teacher.pt``) and no longer trains.
        frozen_after_epoch: the epoch at whose end it was frozen.
    """

    early: EarlyStopping = field(default_factory=EarlyStopping)
    frozen: bool = False
    frozen_after_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        e = self.early
        return {
            "best_value": e.best_value,
            "best_epoch": e.best_epoch,
            "bad_evals": e.bad_evals,
            "frozen": self.frozen,
            "frozen_after_epoch": self.frozen_after_epoch,
        }

    def load_dict(self, record: Mapping[str, Any]) -> None:
        e = self.early
        e.best_value = record.get("best_value", e.best_value)
        e.best_epoch = record.get("best_epoch", e.best_epoch)
        e.bad_evals = int(record.get("bad_evals", e.bad_evals))
        self.frozen = bool(record.get("frozen", self.frozen))
        self.frozen_after_epoch = record.get("frozen_after_epoch", self.frozen_after_epoch)


@dataclass
class RunState:
    """Early stopping plus the throughput counters of the optimiser steps.

    Attributes:
        early: the early-stopping record (of the watched net: light, or booster
            for ``booster_alone``).
        teacher: the booster's own record under ``distill.teacher_stop``.
        train_seconds: wall time of the optimiser steps (no logging, checkpoints, evaluation).
        train_cpu_seconds: process CPU time of the same steps.
        samples: training rows seen (all processes).
    """

    early: EarlyStopping = field(default_factory=EarlyStopping)
    teacher: TeacherStop = field(default_factory=TeacherStop)
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    samples: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``trainer`` record (keys as written by every earlier version)."""
        e = self.early
        return {
            "best_value": e.best_value,
            "best_epoch": e.best_epoch,
            "bad_evals": e.bad_evals,
            "stopped_early": e.stopped_early,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "samples": self.samples,
            "teacher": self.teacher.to_dict(),
        }

    def load_dict(self, record: Mapping[str, Any]) -> None:
        """Take over a checkpoint's ``trainer`` record (missing keys keep their value)."""
        e = self.early
        e.best_value = record.get("best_value", e.best_value)
        e.best_epoch = record.get("best_epoch", e.best_epoch)
        e.bad_evals = int(record.get("bad_evals", e.bad_evals))
        e.stopped_early = bool(record.get("stopped_early", e.stopped_early))
        self.train_seconds = float(record.get("train_seconds", self.train_seconds))
        self.train_cpu_seconds = float(record.get("train_cpu_seconds", self.train_cpu_seconds))
        self.samples = int(record.get("samples", self.samples))
        if "teacher" in record:
            self.teacher.load_dict(record["teacher"])


__all__ = ["EarlyStopping", "RunState", "TeacherStop"]
