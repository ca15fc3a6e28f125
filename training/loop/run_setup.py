"""A run's ``config.json`` and ``encoder.json``: written at the start, checked on resume.

A fresh run writes them; a resumed run first checks that they are what this
process would write (:func:`check_resumable`), so a resume never continues a
checkpoint on another config or on differently encoded data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.config.errors import ConfigError
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.loop.checkpoint import atomic_write_text
from training.loop.errors import TrainingError
from training.loop.run_files import CONFIG_FILE, ENCODER_FILE


def write_config_and_encoder(
    run_dir: Path, cfg: RunConfig, data: PreparedData, epochs: int, *, resume: bool
) -> None:
    """Write ``RUN/config.json`` and ``RUN/encoder.json`` (checked first when resuming).

    Raises:
        TrainingError: ``resume`` and the run's files on disk say another config or data.
    """
    config_record = {
        **cfg.to_dict(),
        "data_dir": str(data.data_dir) if data.data_dir else None,
        "label": data.label,
        "epochs_requested": epochs,
    }
    encoder_text = json.dumps(data.dataset.encoder.state())
    if resume:
        check_resumable(run_dir, config_record, encoder_text)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config_record, indent=2) + "\n")
    atomic_write_text(run_dir / ENCODER_FILE, encoder_text)


def check_resumable(run_dir: Path, config_record: dict[str, Any], encoder_text: str) -> None:
    """Refuse a resume on another config or other data before anything is rewritten.

    A resume continues the checkpoint's run: the run's ``config.json`` and
    ``encoder.json`` on disk must be what this process would write (the epoch
    budget may change). Comparing before writing keeps a mismatched resume from
    silently replacing the run's encoder (and so its feature encoding).
    """
    stored_config, stored_encoder = run_dir / CONFIG_FILE, run_dir / ENCODER_FILE
    if stored_config.exists():
        # compared as run configs (so keys added since with their defaults match);
        # the data's location may move, its content is checked through the encoder
        record = json.loads(stored_config.read_text())
        extras = ("data_dir", "label", "epochs_requested")
        try:
            old = RunConfig.from_dict({k: v for k, v in record.items() if k not in extras})
        except ConfigError as exc:
            raise TrainingError(f"cannot resume {run_dir}: its {CONFIG_FILE}: {exc}") from exc
        new = RunConfig.from_dict({k: v for k, v in config_record.items() if k not in extras})
        a, b = old.to_dict(), new.to_dict()
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if record.get("label") not in (None, config_record["label"]):
            changed.append("label")
        if changed:
            raise TrainingError(
                f"cannot resume {run_dir}: the run config differs in {changed} "
                "(resume with the config the run was started with, or train into a new --out)"
            )
    if stored_encoder.exists() and json.loads(stored_encoder.read_text()) != json.loads(
        encoder_text
    ):
        raise TrainingError(
            f"cannot resume {run_dir}: the data encodes differently from the run's "
            f"{ENCODER_FILE} (vocabularies or statistics changed: other data, or a different "
            "--max-rows); resume on the data the run was started with"
        )


__all__ = ["check_resumable", "write_config_and_encoder"]
