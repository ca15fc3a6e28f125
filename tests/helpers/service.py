"""Test data for the scoring service: tiny feature tables, tiny TorchScript light
nets that follow the INTERNALS.md interface, artifacts published with the real
repository helpers, and a real uvicorn process.

The modules here are scripted stand-ins for exported light nets (until the
exporter exists they are the only artifacts); they take the same encoded inputs
and expose the same methods (``forward``, ``user_vector``, ``item_vector``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models.contract.feature_spec import FeatureSpec
from models.contract.features import FeatureEncoder
from models.contract.manifest import (
    ENCODER_FILE,
    ITEM_IDS_FILE,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    Manifest,
    checksum_files,
    write_manifest,
)
from models.contract.repository import ModelRepository
from tests.helpers import signing
from tests.helpers.net import free_port
from tests.helpers.repo import ROOT

N_USERS = 40
N_ITEMS = 300
USER_IDS = np.arange(N_USERS, dtype=np.int64) * 3 + 1_000
ITEM_IDS = np.arange(N_ITEMS, dtype=np.int64) * 7 + 10**12
UNKNOWN_ITEM = int(ITEM_IDS.max()) + 1
UNKNOWN_USER = 999_999_999
# The artifact's precomputed vectors leave out the last items: the service must
# compute theirs from store features at load.
EXPORTED_ITEMS = N_ITEMS - 10

SPECS = [
    FeatureSpec("user_id", "categorical", "user", encoding="hash", buckets=64, dim=4),
    FeatureSpec("age", "numeric", "user", transform="standardize"),
    FeatureSpec("gender", "categorical", "user", dim=4),
    FeatureSpec("hour", "numeric", "context", transform="standardize"),
    FeatureSpec("device", "categorical", "context", dim=4),
    FeatureSpec("item_id", "categorical", "item", dim=4),
    FeatureSpec("category", "categorical", "item", dim=4),
    FeatureSpec("price", "numeric", "item", transform="log1p_standardize"),
    FeatureSpec("tags", "multi_categorical", "item", max_len=3, dim=4),
]
USER_FEATURES = ["user_id", "age", "gender"]
CONTEXT_FEATURES = ["hour", "device"]
ITEM_FEATURES = ["item_id", "category", "price", "tags"]


# --------------------------------------------------------------------------- feature tables


def feature_tables(seed: int = 0, n_items: int = N_ITEMS) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    item_ids = np.arange(n_items, dtype=np.int64) * 7 + 10**12
    users = pd.DataFrame(
        {
            "user_id": USER_IDS,
            "age": rng.integers(18, 70, N_USERS).astype(float),
            "gender": rng.choice(["f", "m", "x"], N_USERS),
        }
    )
    users.loc[3, "age"] = np.nan  # a missing value the encoder imputes
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "category": rng.integers(0, 12, n_items),
            "price": np.round(rng.lognormal(3, 1, n_items), 2),
            "tags": [
                [f"t{t}" for t in rng.choice(8, rng.integers(0, 4), replace=False)]
                for _ in range(n_items)
            ],
        }
    )
    return users, items


def write_feature_tables(
    directory: Path, seed: int = 0, n_items: int = N_ITEMS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    directory.mkdir(parents=True, exist_ok=True)
    users, items = feature_tables(seed, n_items)
    users.to_parquet(directory / "users.parquet", index=False)
    items.to_parquet(directory / "items.parquet", index=False)
    return users, items


def fit_encoder(users: pd.DataFrame, items: pd.DataFrame) -> FeatureEncoder:
    columns: dict[str, Any] = {n: users[n].to_numpy() for n in USER_FEATURES}
    columns.update({n: items[n].to_numpy() for n in ITEM_FEATURES})
    columns["hour"] = np.arange(24, dtype=float)
    columns["device"] = np.array(["ios", "android", "web"] * 8)
    return FeatureEncoder(SPECS).fit(columns)


# --------------------------------------------------------------------------- tiny light nets


class Tower(nn.Module):
    """Embeddings (mean-pooled for bags) and raw numerics → a linear projection."""

    def __init__(self, encoder: FeatureEncoder, names: Sequence[str], out: int) -> None:
        super().__init__()
        sparse = [n for n in names if encoder.specs[n].is_sparse]
        self.dense_names: list[str] = [n for n in names if not encoder.specs[n].is_sparse]
        self.emb = nn.ModuleDict(
            {n: nn.Embedding(encoder.cardinality(n), 4, padding_idx=0) for n in sparse}
        )
        self.proj = nn.Linear(4 * len(sparse) + len(self.dense_names), out)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for name, emb in self.emb.items():
            x = features[name]
            e = emb(x)
            if x.dim() == 2:
                mask = (x != 0).unsqueeze(-1).float()
                e = (e * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            parts.append(e)
        for name in self.dense_names:
            parts.append(features[name].unsqueeze(1))
        return self.proj(torch.cat(parts, 1))


class TinyTwoTower(nn.Module):
    def __init__(self, encoder: FeatureEncoder, scale: float = 4.0) -> None:
        super().__init__()
        self.user = Tower(encoder, USER_FEATURES + CONTEXT_FEATURES, 8)
        self.item = Tower(encoder, ITEM_FEATURES, 8)
        self.scale = scale

    @torch.jit.export
    def user_vector(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.user(features), dim=1)

    @torch.jit.export
    def item_vector(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.item(features), dim=1) * self.scale

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return (self.user_vector(features) * self.item_vector(features)).sum(1)


class TinyMLP(nn.Module):
    def __init__(self, encoder: FeatureEncoder, poison: bool = False) -> None:
        super().__init__()
        self.body = Tower(encoder, USER_FEATURES + CONTEXT_FEATURES + ITEM_FEATURES, 16)
        self.head = nn.Linear(16, 1)
        self.poison = poison

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.head(torch.relu(self.body(features))).squeeze(-1)
        if self.poison:
            logits = logits * float("nan")
        return logits


def build_module(kind: str, encoder: FeatureEncoder, seed: int, poison: bool = False):
    torch.manual_seed(seed)
    module = TinyTwoTower(encoder) if kind == "two_tower" else TinyMLP(encoder, poison=poison)
    return torch.jit.script(module.eval())


def encode(encoder: FeatureEncoder, columns: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in encoder.transform(columns).items()}


# --------------------------------------------------------------------------- artifacts


def publish(
    repo: Path,
    name: str,
    kind: str,
    encoder: FeatureEncoder,
    items: pd.DataFrame,
    seed: int = 0,
    poison: bool = False,
    corrupt: bool = False,
) -> str:
    """Publish a tiny artifact with the real repository helpers and promote it.

    Args:
        poison: the module returns NaN (passes checksums, fails warm-up).
        corrupt: ``model.pt`` is altered after the manifest was written (checksum mismatch).
    """
    module = build_module(kind, encoder, seed, poison)
    stage = "coarse" if kind == "two_tower" else "fine"

    def write(directory: Path, version: str) -> None:
        encoder.save(str(directory / ENCODER_FILE))
        torch.jit.save(module, str(directory / MODEL_FILE))
        if kind == "two_tower":
            exported = items.iloc[: len(items) - (N_ITEMS - EXPORTED_ITEMS)]
            cols = {n: exported[n].to_numpy() for n in ITEM_FEATURES}
            with torch.inference_mode():
                vectors = module.item_vector(encode(encoder.subset(ITEM_FEATURES), cols))
            np.save(directory / ITEM_IDS_FILE, exported["item_id"].to_numpy(np.int64))
            np.save(directory / ITEM_VECTORS_FILE, vectors.numpy().astype(np.float32))
        manifest = Manifest(
            name=name,
            version=version,
            created_at="2026-11-22T00:00:00+00:00",
            task="ctr",
            stage=stage,
            kind=kind,
            format="torchscript",
            quantization="none",
            features={"user": USER_FEATURES, "context": CONTEXT_FEATURES, "item": ITEM_FEATURES},
            feature_types={s.name: str(s.type) for s in SPECS},
            spec_hash=encoder.spec_hash(),
            metrics={"auc": 0.5},
            params=sum(p.numel() for p in module.parameters()),
            files=checksum_files(directory),
            git_commit=None,
            rocketrank_version="test",
        )
        write_manifest(directory, manifest)
        signing.sign(directory)
        if corrupt:
            with open(directory / MODEL_FILE, "ab") as fh:
                fh.write(b"tampered")

    return ModelRepository(repo).publish(name, write, verify=not corrupt)


def reference_scores(
    repo: Path,
    name: str,
    version: str,
    user: Mapping[str, Any],
    context: Mapping[str, Any],
    item_rows: Sequence[Mapping[str, Any]],
) -> np.ndarray:
    """sigmoid(forward) of the artifact's module on raw rows, outside the service."""
    directory = ModelRepository(repo).version_dir(name, version)
    encoder = FeatureEncoder.load(str(directory / ENCODER_FILE))
    module = torch.jit.load(str(directory / MODEL_FILE))
    n = len(item_rows)
    columns: dict[str, Any] = {f: [user.get(f)] * n for f in USER_FEATURES}
    columns.update({f: [context.get(f)] * n for f in CONTEXT_FEATURES})
    columns.update({f: [row.get(f) for row in item_rows] for f in ITEM_FEATURES})
    with torch.inference_mode():
        return torch.sigmoid(module(encode(encoder, columns))).numpy()


def item_rows(items: pd.DataFrame, ids: Sequence[int]) -> list[dict[str, Any]]:
    by_id = items.set_index("item_id", drop=False)
    rows = []
    for i in ids:
        rows.append(by_id.loc[i].to_dict() if i in by_id.index else {"item_id": i})
    return rows


def user_row(users: pd.DataFrame, user_id: int) -> dict[str, Any]:
    match = users[users["user_id"] == user_id]
    return match.iloc[0].to_dict() if len(match) else {"user_id": user_id}


def make_repo(root: Path, seed: int = 0, n_items: int = N_ITEMS) -> dict[str, Any]:
    """Feature tables + a coarse (two-tower) and a fine (MLP) model, published."""
    data = root / "data"
    users, items = write_feature_tables(data, seed, n_items)
    encoder = fit_encoder(users, items)
    repo = root / "repo"
    versions = {
        "coarse": publish(repo, "coarse", "two_tower", encoder, items, seed=seed),
        "fine": publish(repo, "fine", "mlp", encoder, items, seed=seed + 1),
    }
    return {
        "data": data,
        "repo": repo,
        "users": users,
        "items": items,
        "encoder": encoder,
        "versions": versions,
    }


# --------------------------------------------------------------------------- a real server


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class ServiceProcess:
    """``rocketrank serve`` in a subprocess (its own session; killed by pid group)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "rocketrank", "serve", *args]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}
        full_env.update({**signing.service_env(), **(env or {})})
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{out}")
            try:
                status, _ = http("GET", self.base + "/readyz")
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError("service did not become ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.stdout.read().decode() if self.proc.stdout else ""
