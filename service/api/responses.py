"""The JSON bodies ``/v1/rank`` answers with: a ranked result (items, model versions, per-step
timing) and an error's ``detail``."""

from __future__ import annotations

import time

import orjson

from service.api.parsing import RequestError
from service.ranking.ranker import RankResult

JSON_MEDIA = "application/json"
JSON_TYPE = [(b"content-type", b"application/json")]


def detail(exc: RequestError) -> bytes:
    """The JSON body of an error answer."""
    return orjson.dumps({"detail": exc.detail})


def serialize(request_id: str, stage: str, result: RankResult, start: float) -> bytes:
    """The JSON body of a ranked answer; adds the ``serialize`` and ``total`` timings."""
    t = time.perf_counter()
    ids = result.item_ids.tolist()
    scores = result.scores.tolist()
    if result.coarse_scores is not None:
        coarse = result.coarse_scores.tolist()
        items = [
            {"item_id": i, "score": s, "coarse_score": c} for i, s, c in zip(ids, scores, coarse)
        ]
    else:
        items = [{"item_id": i, "score": s} for i, s in zip(ids, scores)]
    items_json = orjson.dumps(items)
    timing = result.timing_ms
    timing["serialize"] = (time.perf_counter() - t) * 1e3
    timing["total"] = (time.perf_counter() - start) * 1e3
    return orjson.dumps(
        {
            "request_id": request_id,
            "stage": stage,
            "model_versions": result.model_versions,
            "items": orjson.Fragment(items_json),
            "unknown_item_ids": result.unknown_item_ids,
            "unknown_user": result.unknown_user,
            "degraded": result.degraded,
            "timing_ms": timing,
        }
    )
