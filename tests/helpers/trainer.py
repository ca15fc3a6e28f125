"""Tiny data and configs for the trainer and ablation tests.

The data is the project's synthetic log (``training.synth.write``) at a few
thousand rows: real schema, privileged features, request ids and a CVR task
with a ``where`` filter, yet small enough for a test to train in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config.run import RunConfig
from training.synth.generator import write

TINY_ROWS = 6_000


def write_tiny_data(out_dir: Path, rows: int = TINY_ROWS, seed: int = 3) -> Path:
    """A synthetic data directory (train/valid/test Parquet + schema.yaml)."""
    write(out_dir, rows=rows, seed=seed)
    return out_dir


def tiny_config(
    variant: str = "rocket",
    *,
    light: str = "mlp",
    epochs: int = 2,
    batch_size: int = 256,
    task: str = "ctr",
    **sections: dict[str, Any],
) -> RunConfig:
    """A small, fast run config; ``sections`` update the config sections by key."""
    data: dict[str, Any] = {
        "task": task,
        "stage": "coarse" if light == "two_tower" else "fine",
        "seed": 0,
        "data": {"batch_size": batch_size, "eval_batch_size": 4096},
        "model": {
            "light": light,
            "light_dims": [16, 8],
            "booster": "dcn",
            "booster_dims": [32, 16],
            "cross_layers": 1,
            "cross_rank": 8,
            "sparse": True,
            # the tables here are tiny: keep every one sparse so the trainer tests
            # exercise SparseAdam (and its exact resume), not only the dense group
            "sparse_min_rows": 0,
        },
        "distill": {"variant": variant},
        "optim": {"lr_dense": 0.003, "lr_sparse": 0.02, "epochs": epochs},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return RunConfig.from_dict(data)
