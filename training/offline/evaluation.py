"""``rocketrank eval``: the metrics of ``train`` for an exported artifact on a log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.data_dir import find_data_files, resolve_schema
from training.data.readers import DataReadError, read_columns
from training.data.schema import Schema
from training.evaluate import evaluate_scores
from training.offline.model_ref import load_verified
from training.offline.scoring import (
    log_columns,
    read_side_tables,
    score_columns,
    with_side_features,
)


@dataclass(frozen=True)
class LogSource:
    """One log file to read, its schema and the side tables next to it."""

    path: Path
    schema: Schema
    side_tables: dict[str, Path]
    split: str | None


def find_log(data: Path, split: str | None, schema_path: Path | None = None) -> LogSource:
    """``data`` is a data directory (``split`` picks the file) or one log file.

    A single file takes its schema from ``schema_path`` or the ``schema.yaml`` beside
    it, and the ``users``/``items`` tables beside it.

    Raises:
        DataReadError: no such directory, split or file.
        SchemaError: no usable schema.
    """
    if data.is_file():
        files = find_data_files(data.parent)
        return LogSource(data, resolve_schema(files, schema_path), files.side_tables, None)
    files = find_data_files(data)
    split = split or "test"
    if split not in files.splits:
        known = ", ".join(sorted(files.splits)) or "none"
        raise DataReadError(f"--split {split}: {data} has no {split} split (splits: {known})")
    return LogSource(
        files.splits[split], resolve_schema(files, schema_path), files.side_tables, split
    )


def evaluate_artifact(
    model: str | Path,
    source: LogSource,
    public_key: str | Path | None = None,
    allow_unsigned: bool = False,
) -> dict[str, Any]:
    """Metrics of the artifact ``model`` names on the log ``source``.

    Rows are those of the artifact's task (its ``where`` label == 1), ranking
    metrics group by request id (by user without one), exactly as in training.

    Returns:
        ``{"model": "NAME@VERSION", "path", "task", "log", "split", "metrics": {...},
        "manifest_test_auc"}`` where metrics are :func:`training.evaluate.evaluate_scores`'s.
    """
    artifact = load_verified(model, public_key, allow_unsigned)
    schema = source.schema
    task = schema.task(artifact.manifest.task)
    wanted = log_columns(artifact, schema)
    columns = read_columns(source.path, schema, wanted.all)
    columns = with_side_features(schema, columns, read_side_tables(source.side_tables, schema))
    label_column = schema.labels[task.label].column
    for needed in (label_column, schema.ids.user):
        if needed not in columns:
            raise DataReadError(f"{source.path}: column {needed!r} is missing")
    if task.where is not None:
        keep = np.asarray(columns[schema.labels[task.where].column], dtype=np.float64) == 1
        columns = {k: v[keep] for k, v in columns.items()}
    logits = score_columns(artifact, columns)
    users = np.asarray(columns[schema.ids.user], dtype=np.int64)
    request = schema.ids.request
    groups = np.asarray(columns[request], dtype=np.int64) if request in columns else None
    labels = np.asarray(columns[label_column], dtype=np.float64)
    metrics = evaluate_scores(labels, logits, users, groups)
    exported = artifact.manifest.metrics.get("export", {}).get("test_auc", {})
    return {
        "model": f"{artifact.manifest.name}@{artifact.manifest.version}",
        "path": str(artifact.path),
        "task": task.name,
        "log": str(source.path),
        "split": source.split,
        "metrics": metrics,
        "manifest_test_auc": exported.get("exported"),
    }


__all__ = ["LogSource", "evaluate_artifact", "find_log"]
