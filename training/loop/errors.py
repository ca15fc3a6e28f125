"""The training errors, in a module of their own so the data preparation
(``training.data.prepare``) can raise them without importing the loop, and the
gradient sync (``training.loop.gradient_sync``) without importing the context."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """The run cannot continue; the message says why and what to do."""


class TrainingDivergedError(TrainingError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class DistributedError(RuntimeError):
    """Distributed training cannot run as configured; the message says why."""


__all__ = ["DistributedError", "TrainingDivergedError", "TrainingError"]
