"""How a run is run and what it returns: :class:`TrainOptions` and :class:`TrainResult`.

What a run learns is its :class:`training.config.RunConfig`; these are the loop's
knobs (epochs, resume, checkpoint cadence, early-stopping metric, threads, logging)
and what :func:`training.loop.trainer.train` hands back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.joint import JointModel
from training.loop.checkpoint import Position
from training.loop.tracking import Tracking


@dataclass(frozen=True)
class TrainOptions:
    """How to run (not what to learn — that is the :class:`RunConfig`).

    Attributes:
        epochs: override ``cfg.optim.epochs``.
        resume: continue from ``RUN/checkpoint.pt``.
        checkpoint_every: also checkpoint every N optimiser steps (0 = epoch ends only).
        early_stopping_metric: validation metric of the net being distilled
            (the light net; the booster for ``booster_alone``): ``auc``
            (higher is better) or ``logloss`` (lower is better).
        stop_after_steps: stop (after checkpointing) once this many optimiser
            steps are done — a deliberate interruption, resumable with ``resume``.
        progress: show the tqdm progress bar.
        threads: ``torch.set_num_threads`` during the run, restored after (None = leave it).
        log_every: write a step record to ``metrics.jsonl`` every N steps.
        tracking: TensorBoard / MLflow tracking of the run (``training.loop.tracking``);
            None = none (the CLI's default is TensorBoard on).
    """

    epochs: int | None = None
    resume: bool = False
    checkpoint_every: int = 500
    early_stopping_metric: Literal["auc", "logloss"] = "auc"
    stop_after_steps: int | None = None
    progress: bool = True
    threads: int | None = None
    log_every: int = 1
    tracking: Tracking | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.early_stopping_metric not in ("auc", "logloss"):
            raise ValueError(
                "early_stopping_metric must be 'auc' or 'logloss', "
                f"got {self.early_stopping_metric!r}"
            )
        if self.log_every <= 0:
            raise ValueError(f"log_every must be > 0, got {self.log_every}")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        run_dir: the run directory.
        metrics: the content of ``metrics.json`` (empty when interrupted).
        model: the trained model (best epoch restored when early stopping is on).
        interrupted: the run stopped at ``stop_after_steps`` (resume it later).
        position: where training stands.
    """

    run_dir: Path
    metrics: dict[str, Any]
    model: JointModel
    interrupted: bool = False
    position: Position = field(default_factory=Position)


__all__ = ["TrainOptions", "TrainResult"]
