"""The files of a run directory and the two helpers for its step log.

``RUN/`` holds ``config.json``, ``encoder.json``, ``checkpoint.pt``, ``best.pt``,
``teacher.pt`` (the booster's best-validation state under
``distill.teacher_stop: best_valid``: ``{"format": 1, "model": full state dict}``),
``metrics.jsonl``, ``model.pt`` (a state dict with its ``model_args``, not the
TorchScript module an artifact's ``model.pt`` is), ``metrics.json`` and
``curves.png`` (``docs/INTERNALS.md``, "Trainer → export").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.loop.checkpoint import atomic_write_text

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
TEACHER_FILE = "teacher.pt"
STATE_DICT_FILE = "model.pt"
ENCODER_FILE = "encoder.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"

OUTPUT_FILES = (
    LOG_FILE,
    CHECKPOINT_FILE,
    BEST_FILE,
    TEACHER_FILE,
    STATE_DICT_FILE,
    METRICS_FILE,
    CURVES_FILE,
)
"""What a fresh run deletes first, so it never mixes with an earlier run's outputs."""


def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (they are re-done by the resumed run)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
        if int(rec.get("step", 0)) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every record of ``metrics.jsonl`` (none when the file is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "CURVES_FILE",
    "ENCODER_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "OUTPUT_FILES",
    "STATE_DICT_FILE",
    "TEACHER_FILE",
    "read_log",
    "truncate_log",
]
