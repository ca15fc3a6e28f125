"""A tiny trained-looking run for the export, artifact and repository tests.

Built directly from ``models`` (no trainer): a fitted FeatureEncoder over a
small synthetic log, a JointModel whose light net (and BatchNorm statistics)
saw a few batches, an item catalogue file and, on request, a run directory in
the trainer's layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.contract.feature_spec import FeatureSpec
from models.contract.features import FeatureEncoder
from models.joint import JointModel
from models.joint_args import JointModelArgs
from training.export.run_loader import TrainedRun

N_ITEMS = 300
N_USERS = 200

SPECS = [
    FeatureSpec(name="user_id", type="categorical", side="user", dim=8),
    FeatureSpec(name="user_age", type="numeric", side="user", transform="standardize"),
    FeatureSpec(name="hour", type="categorical", side="context", dim=4),
    FeatureSpec(name="item_id", type="categorical", side="item", dim=8),
    FeatureSpec(name="tags", type="multi_categorical", side="item", max_len=3, dim=4),
    FeatureSpec(name="price", type="numeric", side="item", transform="log1p_standardize"),
    # privileged (booster only): a user×item interaction and a post-click feature
    FeatureSpec(name="user_cat_clicks", type="categorical", side="cross", dim=4),
    FeatureSpec(name="dwell", type="numeric", side="cross"),
]
SERVED = ["user_id", "user_age", "hour", "item_id", "tags", "price"]
PRIVILEGED = ["user_cat_clicks", "dwell"]
ITEM_FEATURES = ["item_id", "tags", "price"]


def item_columns(seed: int = 0) -> dict[str, np.ndarray]:
    """The item catalogue: ids 1000.. (shuffled order), tags bags and prices."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + N_ITEMS, dtype=np.int64))
    tags = np.empty(N_ITEMS, dtype=object)
    for i in range(N_ITEMS):
        tags[i] = rng.integers(0, 20, rng.integers(0, 4)).astype(np.int64)
    price = rng.lognormal(3.0, 1.0, N_ITEMS)
    return {"item_id": ids, "tags": tags, "price": price}


def log_columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Impression rows joining random users with catalogue items."""
    rng = np.random.default_rng(seed + 1)
    items = item_columns()
    pick = rng.integers(0, N_ITEMS, rows)
    return {
        "user_id": rng.integers(0, N_USERS, rows).astype(np.int64),
        "user_age": rng.normal(35, 10, rows),
        "hour": rng.integers(0, 24, rows).astype(np.int64),
        "item_id": items["item_id"][pick],
        "tags": items["tags"][pick],
        "price": items["price"][pick],
        "user_cat_clicks": rng.integers(0, 6, rows).astype(np.int64),
        "dwell": rng.exponential(2.0, rows),
    }


def specs(user_buckets: int = 0) -> list[FeatureSpec]:
    """The feature specs; ``user_buckets > 0`` hashes user ids into that many
    16-wide rows, so embedding rows dominate the light net's size as in production."""
    if not user_buckets:
        return list(SPECS)
    user = FeatureSpec(
        name="user_id", type="categorical", side="user", encoding="hash",
        buckets=user_buckets, dim=16,
    )  # fmt: skip
    return [user, *SPECS[1:]]


def fitted_encoder(user_buckets: int = 0) -> FeatureEncoder:
    return FeatureEncoder(specs(user_buckets)).fit(log_columns(2000))


def make_joint(encoder: FeatureEncoder, light_kind: str, seed: int = 0, **overrides) -> JointModel:
    """A JointModel with non-trivial weights and BatchNorm running statistics."""
    torch.manual_seed(seed)
    kwargs = {
        "features": [s.to_dict() for s in encoder.specs.values()],
        "cardinalities": {
            n: encoder.cardinality(n) for n, s in encoder.specs.items() if s.is_sparse
        },
        "served": list(SERVED),
        "privileged": list(PRIVILEGED),
        "light_kind": light_kind,
        "light_dims": [16, 8],
        "booster_dims": [64, 32],
        "norm": "batch",
    }
    args = JointModelArgs(**{**kwargs, **overrides})
    model = JointModel(args)
    with torch.no_grad():
        for table in model.embeddings.tables.values():
            table.weight.normal_(0.0, 0.3)
        model.train()
        for seed_b in range(3):
            model.forward_joint(encoded(encoder, log_columns(256, seed=10 + seed_b)))
    return model.eval()


def encoded(encoder: FeatureEncoder, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in encoder.transform(columns).items()}


def write_items(path: Path, seed: int = 0) -> Path:
    cols = item_columns(seed)
    table = pa.table(
        {
            "item_id": pa.array(cols["item_id"]),
            "tags": pa.array([t.tolist() for t in cols["tags"]], type=pa.list_(pa.int64())),
            "price": pa.array(cols["price"]),
        }
    )
    pq.write_table(table, path)
    return path


def make_run(
    tmp: Path, light_kind: str = "mlp", user_buckets: int = 0, seed: int = 0, **overrides
) -> TrainedRun:
    """A TrainedRun held in memory (no data directory: parity uses random rows)."""
    encoder = fitted_encoder(user_buckets)
    model = make_joint(encoder, light_kind, seed=seed, **overrides)
    return TrainedRun(
        path=tmp / f"run-{light_kind}",
        model=model,
        encoder=encoder,
        task="ctr",
        stage="coarse" if light_kind == "two_tower" else "fine",
        metrics={"split": "test", "light": {"auc": 0.71, "logloss": 0.42}},
    )


def write_run_dir(run: TrainedRun) -> Path:
    """Write ``run`` in the trainer's run-directory layout."""
    run.path.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": run.model.state_dict(), "model_args": run.model.args.to_dict()},
        run.path / "model.pt",
    )
    run.encoder.save(str(run.path / "encoder.json"))
    (run.path / "metrics.json").write_text(json.dumps(run.metrics))
    (run.path / "config.json").write_text(json.dumps({"task": run.task, "stage": run.stage}))
    return run.path


class _TinyScorer(torch.nn.Module):
    """forward(features) -> logits [B] over one id and one numeric feature."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(8, 3)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([self.table(features["u"]), features["p"].unsqueeze(1)], dim=1)
        return self.out(x).squeeze(1)


def tiny_writer(name: str = "m", seed: int = 0):
    """A ``write(directory, version)`` for ``ModelRepository.publish``: a small but
    complete, verifiable mlp artifact (no training involved)."""
    from models.contract.manifest import Manifest, checksum_files, write_manifest
    from tests.helpers.signing import sign

    encoder = FeatureEncoder(
        [FeatureSpec("u", "categorical", "user"), FeatureSpec("p", "numeric", "item")]
    ).fit({"u": np.arange(5), "p": np.linspace(0, 1, 5)})
    torch.manual_seed(seed)
    scripted = torch.jit.script(_TinyScorer().eval())

    def write(directory: Path, version: str) -> None:
        torch.jit.save(scripted, str(directory / "model.pt"))
        encoder.save(str(directory / "encoder.json"))
        write_manifest(
            directory,
            Manifest(
                name=name,
                version=version,
                created_at="2026-01-01T00:00:00+00:00",
                task="ctr",
                stage="fine",
                kind="mlp",
                format="torchscript",
                quantization="none",
                features={"user": ["u"], "item": ["p"]},
                feature_types={"u": "categorical", "p": "numeric"},
                spec_hash=encoder.spec_hash(),
                metrics={"seed": seed},
                params=29,
                files=checksum_files(directory),
                git_commit=None,
                rocketrank_version="0.1.0",
            ),
        )
        sign(directory)

    return write
