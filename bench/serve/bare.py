"""The bare exported model, timed in-process on the benchmark's own requests.

This is the floor the service is compared with (``server_time_ratio_vs_bare``):
only the light net's arithmetic, on inputs that were encoded and gathered
*before* the clock starts. Per request:

* coarse (two-tower): ``u = user_vector(user + context features)[0]`` and
  ``torch.mv(torch.index_select(item_vectors, 0, rows), u)`` over every
  candidate -- the artifact's precomputed item vectors, rows looked up beforehand;
* fine (MLP): ``forward(features)`` over every candidate, with item features
  already gathered per candidate and user/context features already broadcast;
* cascade: the coarse part over all candidates plus the fine part over the
  ``coarse_top_k`` survivors (chosen beforehand from the coarse logits).

Not timed: JSON parsing, feature lookup and encoding, top-k selection and
serialisation -- exactly what the service adds. All under
``torch.inference_mode()`` with the same torch thread count as one service worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.common.percentiles import summarise
from bench.serve.workload import RankCall
from models.contract.artifact import Artifact, load_artifact
from models.contract.repository import ModelRepository


class FeatureTable:
    """A Parquet feature table as sorted int64 ids plus aligned raw columns.

    Args:
        path: ``users.parquet`` or ``items.parquet``.
        id_column: its id column.
    """

    def __init__(self, path: str | Path, id_column: str) -> None:
        frame = pd.read_parquet(path).sort_values(id_column, kind="stable")
        self.id_column = id_column
        self.ids = frame[id_column].to_numpy(dtype=np.int64)
        self.columns = {c: frame[c].to_numpy() for c in frame.columns if c != id_column}

    def raw(self, ids: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        """Raw columns ``names`` for ``ids`` (the id column from the ids; unknown → ``None``)."""
        pos = np.clip(np.searchsorted(self.ids, ids), 0, max(len(self.ids) - 1, 0))
        found = self.ids[pos] == ids if len(self.ids) else np.zeros(len(ids), dtype=bool)
        out: dict[str, Any] = {}
        for name in names:
            if name == self.id_column:
                out[name] = ids
            elif name in self.columns:
                col = self.columns[name][pos]
                if not found.all():
                    col = col.astype(object)
                    col[~found] = None
                out[name] = col
            else:
                out[name] = np.full(len(ids), None, dtype=object)
        return out


def load_stage_artifacts(repo: str | Path, models: Mapping[str, str]) -> dict[str, Artifact]:
    """``{role: Artifact}`` for the ``current`` version of each named model."""
    repository = ModelRepository(repo)
    # allow_unsigned: a benchmark of an operator's own repository; the service is the gate
    return {
        role: load_artifact(repository.resolve_current(name), allow_unsigned=True)
        for role, name in models.items()
    }


def _encode(artifact: Artifact, columns: Mapping[str, Any], names: list[str]):
    arrays = artifact.encoder.transform(columns, names=names)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


@dataclass
class _Side:
    names: list[str]
    tensors: dict[str, torch.Tensor]


def _side(artifact: Artifact, users: FeatureTable, call: RankCall) -> _Side:
    m = artifact.manifest
    user_names = list(m.features.get("user", []))
    ctx_names = list(m.features.get("context", []))
    columns = users.raw(np.array([call.user_id], dtype=np.int64), user_names)
    for n in ctx_names:
        columns[n] = [call.context.get(n)]
    return _Side(user_names + ctx_names, _encode(artifact, columns, user_names + ctx_names))


class BareRequest:
    """One benchmark request prepared for the bare model: ``run()`` is what gets timed."""

    def __init__(
        self,
        artifacts: Mapping[str, Artifact],
        users: FeatureTable,
        items: FeatureTable,
        call: RankCall,
    ) -> None:
        self.parts: list[Callable[[], torch.Tensor]] = []
        ids = call.candidates
        with torch.inference_mode():
            if call.stage in ("coarse", "cascade"):
                coarse = self._prepare(artifacts["coarse"], users, items, call, ids)
                self.parts.append(coarse)
                if call.stage == "cascade":
                    k = min(call.coarse_top_k or len(ids), len(ids))
                    survivors = torch.topk(coarse(), k).indices.numpy()
                    ids = ids[survivors]
            if call.stage in ("fine", "cascade"):
                self.parts.append(self._prepare(artifacts["fine"], users, items, call, ids))

    @staticmethod
    def _prepare(
        artifact: Artifact,
        users: FeatureTable,
        items: FeatureTable,
        call: RankCall,
        ids: np.ndarray,
    ) -> Callable[[], torch.Tensor]:
        side = _side(artifact, users, call)
        module = artifact.module
        if artifact.manifest.kind == "two_tower":
            assert artifact.item_ids is not None and artifact.item_vectors is not None
            vectors = torch.from_numpy(np.ascontiguousarray(artifact.item_vectors))
            vectors = torch.cat([vectors, vectors.new_zeros(1, vectors.shape[1])])
            pos = np.clip(np.searchsorted(artifact.item_ids, ids), 0, len(artifact.item_ids) - 1)
            pos[artifact.item_ids[pos] != ids] = len(artifact.item_ids)  # zero row
            rows = torch.from_numpy(pos.astype(np.int64))
            tensors = side.tensors

            def coarse() -> torch.Tensor:
                u = module.user_vector(tensors)[0]
                return torch.mv(torch.index_select(vectors, 0, rows), u)

            return coarse
        item_names = list(artifact.manifest.features.get("item", []))
        feats = _encode(artifact, items.raw(ids, item_names), item_names)
        k = len(ids)
        for n, t in side.tensors.items():
            feats[n] = t.expand(k, *t.shape[1:]).contiguous()

        def fine() -> torch.Tensor:
            return module(feats)

        return fine

    def run(self) -> None:
        for part in self.parts:
            part()


def measure_bare(
    artifacts: Mapping[str, Artifact],
    features_dir: str | Path,
    calls: Sequence[RankCall],
    *,
    threads: int,
    repeats: int = 20,
    warmup: int = 3,
    user_id_column: str = "user_id",
    item_id_column: str = "item_id",
) -> dict[str, Any]:
    """Time the bare model on every call ``repeats`` times.

    Args:
        artifacts: ``{"coarse": ..., "fine": ...}`` as the calls' stages need.
        features_dir: folder with ``users.parquet`` and ``items.parquet``.
        calls: the benchmark's requests.
        threads: torch intra-op threads (as one service worker uses).
        repeats: timed passes over all calls.
        warmup: untimed passes first.

    Returns:
        ``{"p50_ms", "mean_ms", "p99_ms", "count", "threads", "definition"}``.
    """
    directory = Path(features_dir)
    users = FeatureTable(directory / "users.parquet", user_id_column)
    items = FeatureTable(directory / "items.parquet", item_id_column)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prepared = [BareRequest(artifacts, users, items, c) for c in calls]
        samples: list[float] = []
        with torch.inference_mode():
            for _ in range(warmup):
                for req in prepared:
                    req.run()
            for _ in range(repeats):
                for req in prepared:
                    t = time.perf_counter()
                    req.run()
                    samples.append((time.perf_counter() - t) * 1e3)
    finally:
        torch.set_num_threads(previous)
    s = summarise(samples)
    return {
        "p50_ms": s["p50_ms"],
        "mean_ms": s["mean_ms"],
        "p99_ms": s["p99_ms"],
        "count": s["count"],
        "threads": threads,
        "definition": "light-net arithmetic only on pre-encoded, pre-gathered inputs: "
        "two-tower user_vector + index_select/mv over precomputed item vectors; "
        "MLP forward over the candidates; cascade = both (fine on the coarse survivors)",
    }


__all__ = ["BareRequest", "FeatureTable", "load_stage_artifacts", "measure_bare"]
