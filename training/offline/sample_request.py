"""A ``POST /v1/rank`` body built from a log: a real user, real candidate items and
the context of one of the user's logged impressions, so a first request ranks ids
the feature store knows (not ``unknown_user: true`` defaults)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from models.contract.feature_spec import Side
from training.data.data_dir import find_data_files, resolve_schema
from training.data.readers import DataReadError, read_columns

STAGES = ("coarse", "fine", "cascade")


def _json_value(value: Any) -> Any:
    """A raw log value as JSON (numpy scalars unwrapped, NaN/None as null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def sample_request(
    data_dir: Path,
    stage: str = "cascade",
    candidates: int = 100,
    top_k: int = 10,
    coarse_top_k: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A rank request for one logged user over ``candidates`` catalogue items.

    The user and the context come from one row of the test split (valid, then
    train, when there is none); candidates are drawn from ``items.parquet`` (the
    items of that split without one) and always include the row's own item.

    Raises:
        DataReadError: no data directory, split or item id column.
        ValueError: a bad stage or count.
    """
    if stage not in STAGES:
        raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if candidates < 1 or top_k < 1:
        raise ValueError("--candidates and --top-k must be >= 1")
    files = find_data_files(data_dir)
    schema = resolve_schema(files, None)
    split = next((s for s in ("test", "valid", "train") if s in files.splits), None)
    if split is None:
        raise DataReadError(f"{data_dir}: no train, valid or test split")
    context = [f.name for f in schema.features if f.side is Side.CONTEXT]
    ids = [schema.ids.user, schema.ids.item]
    log = read_columns(files.splits[split], schema, ids + context)
    if any(c not in log for c in ids):
        raise DataReadError(f"{files.splits[split]}: needs columns {ids}")
    rng = np.random.default_rng(seed)
    row = int(rng.integers(len(log[schema.ids.user])))
    if "items" in files.side_tables:
        catalogue = read_columns(files.side_tables["items"], schema, [schema.ids.item])
        pool = np.asarray(catalogue[schema.ids.item], dtype=np.int64)
    else:
        pool = np.asarray(log[schema.ids.item], dtype=np.int64)
    pool = np.unique(pool)
    own = int(log[schema.ids.item][row])
    others = pool[pool != own]
    drawn = rng.choice(others, size=min(candidates - 1, len(others)), replace=False)
    body: dict[str, Any] = {
        "user_id": int(log[schema.ids.user][row]),
        "context": {c: _json_value(log[c][row]) for c in context if c in log},
        "candidates": [own, *(int(i) for i in drawn)],
        "stage": stage,
        "top_k": min(top_k, candidates),
    }
    if stage == "cascade":
        body["coarse_top_k"] = coarse_top_k or max(body["top_k"], min(50, candidates))
    return body


__all__ = ["STAGES", "sample_request"]
