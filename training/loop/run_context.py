"""What the functions of one run share (:class:`Run`) and the batches of its epochs.

:func:`training.loop.trainer._start` builds the one :class:`Run` of a
:func:`~training.loop.trainer.train` call; every later stage (restore, epochs,
steps, validation, finish) reads and updates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from models.joint import JointModel
from models.joint_args import JointModelArgs
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.losses import DistillSettings
from training.distill.rules import Variant
from training.loop.checkpoint import Position
from training.loop.distributed import DistContext
from training.loop.options import TrainOptions
from training.loop.run_files import LOG_FILE
from training.loop.state import RunState


@dataclass
class Run:
    """Everything the functions of one run share; built once by ``trainer._start``."""

    cfg: RunConfig
    data: PreparedData
    run_dir: Path
    options: TrainOptions
    teacher: JointModel | None
    dist: DistContext
    model: JointModel
    args: JointModelArgs
    optimizers: dict[str, torch.optim.Optimizer]
    variant: Variant
    settings: DistillSettings
    epochs: int
    steps_per_epoch: int
    watched: Literal["light", "booster"]
    state: RunState
    clip_groups: list[list[torch.nn.Parameter]]
    teacher_stop: bool = False
    pretrain_epochs: int = 0
    position: Position = field(default_factory=Position)
    step: int = 0
    best_state: dict[str, Tensor] | None = None
    teacher_best: dict[str, Tensor] | None = None
    frozen_teacher: JointModel | None = None

    @property
    def log_path(self) -> Path:
        """``RUN/metrics.jsonl``, the step and eval records."""
        return self.run_dir / LOG_FILE

    def pretraining(self, epoch: int) -> bool:
        """Epoch ``epoch`` trains the booster alone (``distill.teacher_pretrain_epochs``)."""
        return epoch < self.joint_start_epoch

    @property
    def joint_start_epoch(self) -> int:
        """The first epoch of the joint phase (a freeze during pre-training ends it)."""
        frozen_after = self.state.teacher.frozen_after_epoch
        if self.state.teacher.frozen and frozen_after is not None:
            return min(self.pretrain_epochs, frozen_after + 1)
        return self.pretrain_epochs

    @property
    def booster_source(self) -> JointModel | None:
        """Whose booster is evaluated: the frozen teacher's, else ``None`` (the model's)."""
        return self.frozen_teacher if self.frozen_teacher is not None else self.teacher


def train_batches(run: Run, epoch: int) -> Any:
    """Epoch ``epoch``'s global batches of the training split (shuffled from seed and epoch)."""
    train, data_cfg = run.data.train, run.cfg.data
    if data_cfg.shuffle_unit == "requests":
        return train.iter_batches(
            data_cfg.batch_size, shuffle=True, seed=run.cfg.seed, epoch=epoch, unit="requests"
        )
    return train.iter_batches(data_cfg.batch_size, shuffle=True, seed=run.cfg.seed, epoch=epoch)


__all__ = ["Run", "train_batches"]
