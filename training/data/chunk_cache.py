"""The encoded-split cache of a streamed split, chunk by chunk: ``chunk-<k>.pt`` files.

:class:`training.data.streaming.StreamingSplit` writes each encoded chunk once
and reads it back in later epochs and runs instead of encoding it again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from training.data.dataset import EncodedColumns

_CHUNK_FORMAT = 1


def save_chunk(path: Path, rows: EncodedColumns) -> None:
    """Write one encoded chunk atomically; skipped where the directory is read-only."""
    blob = {
        "format": _CHUNK_FORMAT,
        "features": rows.features,
        "labels": rows.labels,
        "group": rows.group,
        "user": rows.user,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:  # read-only data directories still stream
        return
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_chunk(path: Path) -> EncodedColumns:
    """Read back a chunk :func:`save_chunk` wrote (``ValueError`` on another format)."""
    blob = torch.load(path, weights_only=True)
    if blob.get("format") != _CHUNK_FORMAT:
        raise ValueError(f"{path}: unsupported chunk format {blob.get('format')!r}")
    return EncodedColumns(blob["features"], blob["labels"], blob["group"], blob["user"])


__all__ = ["load_chunk", "save_chunk"]
