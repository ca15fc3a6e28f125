"""Training checkpoints: atomic writes, safe loads, RNG and data-position state.

A checkpoint is one ``torch.save`` dict made only of tensors, numbers, strings,
lists, tuples and dicts, so it loads with ``torch.load(..., weights_only=True)``
(nothing is unpickled beyond that allow-list). Keys:

* ``model``: the model's ``state_dict``; ``model_args``: its constructor
  arguments (plain JSON-like values), so the model rebuilds itself;
* ``optimizers``: ``{name: optimizer.state_dict()}``;
* ``rng``: torch, numpy and Python generator states (see :func:`capture_rng`);
* ``position``: ``{"epoch", "batch", "step"}`` — the next batch to train is
  batch ``batch`` of epoch ``epoch`` (0-based), ``step`` optimizer steps done;
* ``trainer``: early-stopping bookkeeping and anything else the loop needs;
* ``config``: the resolved run config as a dict.

Files are written to a temporary name in the same directory, fsynced, then
renamed over the target, so a killed job never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run."""


@dataclass(frozen=True)
class Position:
    """Where training stands: next batch ``batch`` of ``epoch``; ``step`` updates done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Position:
        return cls(epoch=int(data["epoch"]), batch=int(data["batch"]), step=int(data["step"]))


def capture_rng() -> dict[str, Any]:
    """Current torch, numpy (global legacy generator) and Python RNG states.

    numpy's key array is stored as a tensor and Python's state as a tuple of
    ints, so the result passes ``weights_only=True`` loading.
    """
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {
                "key": np_state["key"].numpy().astype(np.uint32),
                "pos": int(np_state["pos"]),
            },
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the target's directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    model_args: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer],
    position: Position,
    trainer_state: Mapping[str, Any],
    config: Mapping[str, Any],
) -> None:
    """Write a full training checkpoint atomically (see the module docstring)."""
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "model_args": dict(model_args),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "rng": capture_rng(),
            "position": position.to_dict(),
            "trainer": dict(trainer_state),
            "config": dict(config),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` if bad."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or an object outside the safe allow-list
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a rocketrank checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


__all__ = [
    "CheckpointError",
    "Position",
    "atomic_torch_save",
    "atomic_write_text",
    "capture_rng",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]
