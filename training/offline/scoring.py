"""Logits of an exported artifact for raw log columns, chunk by chunk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.contract.artifact import Artifact
from training.data.encoding import encode_features
from training.data.readers import Columns, join_side_tables, read_columns
from training.data.schema import Schema

CHUNK_ROWS = 65_536
"""Rows per forward pass."""


@dataclass(frozen=True)
class LogColumns:
    """The columns a scoring pass reads from a log (and nothing else).

    Attributes:
        features: the artifact's served features.
        extra: ids and labels kept alongside (user, item, request ids, labels).
    """

    features: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def all(self) -> list[str]:
        return list(dict.fromkeys(self.features + self.extra))


def log_columns(artifact: Artifact, schema: Schema) -> LogColumns:
    """Served features of ``artifact`` plus the schema's ids and label columns."""
    ids = [schema.ids.user, schema.ids.item] + ([schema.ids.request] if schema.ids.request else [])
    labels = [label.column for label in schema.labels.values()]
    return LogColumns(tuple(artifact.encoder.specs), tuple(ids + labels))


def read_side_tables(paths: Mapping[str, Path], schema: Schema) -> dict[str, Columns]:
    """The ``users``/``items`` tables that fill in features a log lacks."""
    return {name: read_columns(path, schema) for name, path in paths.items()}


def with_side_features(schema: Schema, columns: Columns, side: Mapping[str, Columns]) -> Columns:
    """``columns`` plus the served features joined from the side tables."""
    return join_side_tables(schema, columns, side) if side else dict(columns)


@torch.inference_mode()
def score_columns(
    artifact: Artifact, columns: Mapping[str, np.ndarray], chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """Light-net logits of raw canonical columns through the artifact.

    Args:
        artifact: a loaded artifact (``load_artifact``).
        columns: raw columns holding every served feature (``N`` rows each).
        chunk_rows: rows per forward pass.

    Returns:
        float64 ``[N]`` logits (the module computes in float32).
    """
    names = list(artifact.encoder.specs)
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(
            f"the log lacks served feature column(s) {missing} of model "
            f"{artifact.manifest.name}@{artifact.manifest.version} (and no users/items "
            "table supplies them)"
        )
    n = len(columns[names[0]]) if names else 0
    encoded = encode_features(artifact.encoder, {k: columns[k] for k in names})
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        part = {
            k: torch.from_numpy(np.ascontiguousarray(v[start : start + chunk_rows]))
            for k, v in encoded.items()
        }
        out[start : start + chunk_rows] = artifact.module(part).double().numpy()
    return out


__all__ = [
    "CHUNK_ROWS",
    "LogColumns",
    "log_columns",
    "read_side_tables",
    "score_columns",
    "with_side_features",
]
