"""The naive baseline: the scoring service the way tutorials build it.

Same API shape (``POST /v1/rank`` with ``user_id``, ``context``, ``candidates``,
``stage``, ``top_k``, ``coarse_top_k``), same artifacts, same feature tables,
same uvicorn stack (httptools, uvloop, one worker, same torch threads) -- only
the application code differs. Per request it:

1. validates the body into pydantic models, **one ``Candidate`` object per
   candidate** (a bare id becomes ``Candidate(item_id=id)``);
2. looks every candidate up in a ``dict[int, dict]`` of raw item features and
   the user in a ``dict[int, dict]`` of raw user features (built from the
   Parquet tables at start-up), building per-row Python dicts;
3. encodes those rows with the artifact's ``FeatureEncoder`` (the same
   contract code the service uses) and runs the TorchScript module's full
   ``forward`` over all candidates under ``torch.no_grad()`` -- for the
   two-tower coarse model that means user *and* item towers for every
   candidate: **no precomputed item vectors**;
4. sorts with Python's ``sorted`` over ``(id, score)`` pairs, keeps ``top_k``
   (cascade: ``coarse_top_k`` then the fine model on those, then ``top_k``);
5. returns a pydantic response model that FastAPI serialises (``jsonable_encoder``).

The endpoint is a plain ``def`` (FastAPI runs it in its thread pool, so it does
not block the event loop: the tutorial's better half). An ASGI wrapper puts the
time from the request's arrival at the app to the start of the response
(parse + handler + serialisation) in an ``x-server-time-ms`` header.

Run: ``python -m bench.serve.naive_server --repo REPO --features DIR --port P``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, model_validator

from models.contract.artifact import Artifact, load_artifact
from models.contract.manifest import ArtifactError
from models.contract.repository import ModelRepository
from models.contract.repository_reader import RepositoryError


class Candidate(BaseModel):
    item_id: int
    features: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_id(cls, value: Any) -> Any:
        return {"item_id": value} if isinstance(value, int) else value


class NaiveRankRequest(BaseModel):
    user_id: int
    user_features: dict[str, Any] | None = None
    context: dict[str, Any] = {}
    candidates: list[Candidate]
    stage: Literal["coarse", "fine", "cascade"] = "cascade"
    top_k: int = 50
    coarse_top_k: int = 500
    request_id: str | None = None


class ScoredItem(BaseModel):
    item_id: int
    score: float
    coarse_score: float | None = None


class NaiveRankResponse(BaseModel):
    stage: str
    items: list[ScoredItem]


def _records(path: Path, id_column: str) -> dict[int, dict[str, Any]]:
    frame = pd.read_parquet(path)
    out: dict[int, dict[str, Any]] = {}
    for row in frame.to_dict(orient="records"):
        out[int(row[id_column])] = row
    return out


class NaiveScorer:
    """Loads the artifacts and the feature dicts; scores one stage per call."""

    def __init__(
        self,
        repo: Path,
        features_dir: Path,
        models: dict[str, str],
        user_id_column: str = "user_id",
        item_id_column: str = "item_id",
    ) -> None:
        repository = ModelRepository(repo)
        self.artifacts: dict[str, Artifact] = {
            # allow_unsigned: a benchmark of an operator's own repository; the service is the gate
            role: load_artifact(repository.resolve_current(name), allow_unsigned=True)
            for role, name in models.items()
        }
        self.users = _records(features_dir / "users.parquet", user_id_column)
        self.items = _records(features_dir / "items.parquet", item_id_column)
        self.user_id_column = user_id_column
        self.item_id_column = item_id_column

    def score(
        self, role: str, request: NaiveRankRequest, candidates: list[Candidate]
    ) -> list[float]:
        artifact = self.artifacts[role]
        user = dict(self.users.get(request.user_id, {}))
        user.update(request.user_features or {})
        user[self.user_id_column] = request.user_id
        rows = []
        for cand in candidates:
            row = dict(self.items.get(cand.item_id, {}))
            row.update(cand.features)
            row[self.item_id_column] = cand.item_id
            row.update(user)
            row.update(request.context)
            rows.append(row)
        names = artifact.manifest.feature_names
        columns = {name: [row.get(name) for row in rows] for name in names}
        encoded = artifact.encode(columns)
        with torch.no_grad():
            logits = artifact.module(encoded)
        return torch.sigmoid(logits).tolist()


def create_naive_app(scorer: NaiveScorer) -> FastAPI:
    app = FastAPI(title="naive baseline")

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/rank", response_model=NaiveRankResponse)
    def rank(request: NaiveRankRequest) -> NaiveRankResponse:
        roles = ["coarse", "fine"] if request.stage == "cascade" else [request.stage]
        for role in roles:
            if role not in scorer.artifacts:
                raise HTTPException(422, f"no {role} model loaded")
        candidates = request.candidates
        scores = scorer.score(roles[0], request, candidates)
        ranked = sorted(zip(candidates, scores), key=lambda pair: pair[1], reverse=True)
        if request.stage != "cascade":
            return NaiveRankResponse(
                stage=request.stage,
                items=[ScoredItem(item_id=c.item_id, score=s) for c, s in ranked[: request.top_k]],
            )
        survivors = ranked[: request.coarse_top_k]
        fine = scorer.score("fine", request, [c for c, _ in survivors])
        final = sorted(zip(survivors, fine), key=lambda pair: pair[1], reverse=True)[
            : request.top_k
        ]
        return NaiveRankResponse(
            stage=request.stage,
            items=[ScoredItem(item_id=c.item_id, score=s, coarse_score=cs) for (c, cs), s in final],
        )

    return app


class ServerTimeHeader:
    """ASGI wrapper: ``x-server-time-ms`` = arrival at the app → response start."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1e3
                headers = [*message.get("headers", []), (b"x-server-time-ms", b"%.4f" % ms)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="naive baseline scoring server (benchmarks)")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--coarse-model", default="coarse")
    parser.add_argument("--fine-model", default="fine")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = cores)")
    args = parser.parse_args(argv)
    models = {
        role: name
        for role, name in (("coarse", args.coarse_model), ("fine", args.fine_model))
        if name
    }
    try:
        scorer = NaiveScorer(args.repo, args.features, models)
    except (ArtifactError, RepositoryError, OSError) as exc:
        print(f"naive_server: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    # warm the TorchScript module once per stage (its first call optimises the graph)
    warm_ids = list(scorer.items)[:64] or [0]
    warm = NaiveRankRequest(user_id=next(iter(scorer.users), 0), candidates=warm_ids)
    for role in scorer.artifacts:
        for _ in range(3):
            scorer.score(role, warm, warm.candidates)

    import uvicorn

    uvicorn.run(
        ServerTimeHeader(create_naive_app(scorer)),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
