"""Tiny impression logs for the data-layer tests (independent of the synthetic generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from training.data.schema import Schema

SCHEMA = {
    "version": 1,
    "name": "tiny_feed",
    "ids": {"request": "request_id", "user": "user_id", "item": "item_id", "timestamp": "ts"},
    "labels": {"click": {"column": "click"}, "conversion": {"column": "conversion"}},
    "tasks": {
        "ctr": {"label": "click", "privileged": ["user_item_clicks"]},
        "cvr": {"label": "conversion", "where": "click", "privileged": ["dwell_time"]},
    },
    "features": [
        {"name": "user_id", "type": "categorical", "side": "user", "encoding": "hash",
         "buckets": 64, "dim": 4},
        {"name": "item_id", "type": "categorical", "side": "item", "dim": 4},
        {"name": "city", "type": "categorical", "side": "user", "dim": 4},
        {"name": "tags", "type": "multi_categorical", "side": "item", "max_len": 3, "dim": 4},
        {"name": "topics", "type": "multi_categorical", "side": "user", "max_len": 4,
         "separator": ";", "dim": 4},
        {"name": "price", "type": "numeric", "side": "item", "transform": "log1p_standardize"},
        {"name": "age", "type": "numeric", "side": "user", "transform": "bucketize",
         "num_buckets": 4, "dim": 4},
        {"name": "hour", "type": "numeric", "side": "context"},
        {"name": "user_item_clicks", "type": "numeric", "side": "cross"},
        {"name": "dwell_time", "type": "numeric", "side": "context", "transform": "log1p"},
    ],
}  # fmt: skip

CITIES = np.array(["paris", "lyon", "nice", "lille", "metz"])
TOPICS = np.array(["sport", "news", "tech", "food", "art", "cars"])


def schema() -> Schema:
    return Schema.from_dict(SCHEMA)


def make_log(n_rows: int, seed: int, n_users: int = 40, n_items: int = 60) -> pd.DataFrame:
    """An impression log with every kind of column (bags as Python lists)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(1, n_users + 1, n_rows) * 1_000_003  # large, sparse int64 ids
    item = rng.integers(1, n_items + 1, n_rows) + 10_000_000_000
    price = rng.lognormal(3.0, 1.0, n_rows)
    price[rng.random(n_rows) < 0.05] = np.nan
    price[rng.random(n_rows) < 0.02] = np.inf
    click = (rng.random(n_rows) < 0.3).astype(np.int64)
    click[:2] = [0, 1][:n_rows]  # both label values whenever there are two rows
    conversion = click * (rng.random(n_rows) < 0.4).astype(np.int64)
    clicked = np.flatnonzero(click)[:2]
    conversion[clicked] = [1, 0][: len(clicked)]  # both values among clicks when possible
    tags = [
        rng.choice(np.arange(1, 20), size=rng.integers(0, 5), replace=False).tolist()
        for _ in range(n_rows)
    ]
    topics = [
        rng.choice(TOPICS, size=rng.integers(0, 4), replace=False).tolist() for _ in range(n_rows)
    ]
    return pd.DataFrame(
        {
            "request_id": np.arange(n_rows, dtype=np.int64) // 5 + seed * 1_000_000,
            "user_id": user.astype(np.int64),
            "item_id": item.astype(np.int64),
            "ts": np.arange(n_rows, dtype=np.int64) + 1_700_000_000,
            "click": click,
            "conversion": conversion,
            "city": rng.choice(CITIES, n_rows),
            "tags": tags,
            "topics": topics,
            "price": price,
            "age": rng.integers(18, 80, n_rows).astype(np.float64),
            "hour": rng.integers(0, 24, n_rows).astype(np.int64),
            "user_item_clicks": rng.poisson(1.0, n_rows).astype(np.float64),
            "dwell_time": np.where(click == 1, rng.exponential(30.0, n_rows), 0.0),
        }
    )


def to_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Bags as separator-joined strings, as a CSV log holds them."""
    out = df.copy()
    seps = {f["name"]: f.get("separator", "|") for f in SCHEMA["features"]}
    for col in ("tags", "topics"):
        if col in out:
            out[col] = [seps[col].join(map(str, bag)) for bag in out[col]]
    return out


def write_frame(df: pd.DataFrame, path: Path, row_group_size: int | None = None) -> Path:
    if path.suffix == ".csv":
        to_csv_frame(df).to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size)
    return path


def write_data_dir(
    root: Path,
    fmt: str = "parquet",
    rows: tuple[int, int, int] = (300, 100, 100),
    seed: int = 0,
    frames: dict[str, pd.DataFrame] | None = None,
    row_group_size: int | None = None,
) -> Path:
    """Write ``train/valid/test.<fmt>`` and ``schema.yaml`` into ``root``.

    ``frames`` replaces the generated frame of a split (to inject bad data).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    frames = frames or {}
    for i, (split, n) in enumerate(zip(("train", "valid", "test"), rows)):
        df = frames.get(split)
        if df is None:
            df = make_log(n, seed + i)
        write_frame(df, root / f"{split}.{fmt}", row_group_size)
    return root
