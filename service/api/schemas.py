"""Request and response models of the HTTP API (OpenAPI schema and examples).

``POST /v1/rank`` bodies carry up to tens of thousands of candidate ids, so the
hot path does not build a pydantic object per candidate: the body is parsed with
orjson, the small fields are validated with :class:`RankRequestHead`, and the
candidate list becomes a numpy int64 array (see ``service.api.parsing``).
:class:`RankRequest` documents the whole body for OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
Scalar = Annotated[int, Field(strict=True)] | float | str | bool | None
FeatureValue = Scalar | list[Annotated[int, Field(strict=True)] | float | str]
FeatureMap = dict[str, FeatureValue]

EXAMPLE_IDS = {
    "summary": "cascade over plain item ids",
    "value": {
        "user_id": 1234,
        "context": {"hour": 20, "device": "ios"},
        "candidates": [101, 102, 103, 104, 105],
        "stage": "cascade",
        "coarse_top_k": 3,
        "top_k": 2,
        "request_id": "req-42",
    },
}
EXAMPLE_INLINE = {
    "summary": "fine stage with inline item features overriding the store",
    "value": {
        "user_id": 1234,
        "user_features": {"age_bucket": 3},
        "candidates": [101, {"item_id": 999001, "features": {"price": 19.9, "category": 7}}],
        "stage": "fine",
        "top_k": 2,
    },
}


class RankRequestHead(BaseModel):
    """Every field of a rank request except ``candidates``."""

    model_config = ConfigDict(extra="forbid")

    user_id: Int64 = Field(description="int64 user id.")
    user_features: FeatureMap | None = Field(
        None, description="Raw user features; each one overrides the feature store's value."
    )
    context: FeatureMap = Field(
        default_factory=dict, description="Raw context features of the request (hour, device)."
    )
    stage: Literal["coarse", "fine", "cascade"] = Field(
        "cascade",
        description="coarse: two-tower over all candidates; fine: MLP over all candidates; "
        "cascade: coarse, keep coarse_top_k, fine over the survivors.",
    )
    coarse_top_k: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        None, description="Coarse survivors passed to the fine stage (cascade only)."
    )
    top_k: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        None, description="Items returned, best first."
    )
    request_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="Echoed back; generated when absent."
    )


class CandidateObject(BaseModel):
    """A candidate with inline raw item features that override the feature store."""

    model_config = ConfigDict(extra="forbid")

    item_id: Int64
    features: FeatureMap = Field(default_factory=dict)


class RankRequest(RankRequestHead):
    """Body of ``POST /v1/rank``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [EXAMPLE_IDS["value"]]}
    )

    candidates: list[Int64 | CandidateObject] = Field(
        description="int64 item ids, or objects with item_id and inline features "
        "(the fast path is a plain list of ids).",
        min_length=1,
    )


class RankedItem(BaseModel):
    item_id: int
    score: float = Field(description="sigmoid of the light net's logit for the served stage.")
    coarse_score: float | None = Field(None, description="coarse-stage probability (cascade only).")


class RankResponse(BaseModel):
    """Answer of ``POST /v1/rank``."""

    request_id: str
    stage: str
    model_versions: dict[str, str] = Field(description="stage -> model version used.")
    items: list[RankedItem] = Field(description="best first.")
    unknown_item_ids: list[int] = Field(
        description="candidates unknown to the feature store / model (scored with defaults)."
    )
    unknown_user: bool = Field(description="the user is unknown to the feature store.")
    degraded: bool = Field(
        description="default features replaced unavailable ones (feature store down or slow)."
    )
    timing_ms: dict[str, float] = Field(description="server-side milliseconds per step.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "req-42",
                    "stage": "cascade",
                    "model_versions": {"coarse": "20261122T190000Z", "fine": "20261122T190500Z"},
                    "items": [
                        {"item_id": 103, "score": 0.31, "coarse_score": 0.55},
                        {"item_id": 101, "score": 0.12, "coarse_score": 0.61},
                    ],
                    "unknown_item_ids": [],
                    "unknown_user": False,
                    "degraded": False,
                    "timing_ms": {
                        "parse": 0.05,
                        "feature_fetch": 0.02,
                        "preprocess": 0.2,
                        "coarse_inference": 0.3,
                        "fine_inference": 0.4,
                        "postprocess": 0.02,
                        "serialize": 0.01,
                        "total": 1.0,
                    },
                }
            ]
        }
    )


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """A 4xx answer: ``detail`` names each offending field."""

    detail: list[ErrorItem] | str


class ModelInfo(BaseModel):
    stage: str
    name: str
    version: str
    kind: str
    task: str
    created_at: str
    quantization: str
    spec_hash: str
    features: dict[str, list[str]]
    items: int
    items_version: str
    loaded_at: float


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    feature_store: dict[str, object]


class ReloadResult(BaseModel):
    stage: str
    name: str
    result: Literal["success", "unchanged", "failed", "missing"]
    version: str | None
    attempted: str | None = None
    error: str | None = None


class AdminResponse(BaseModel):
    results: list[ReloadResult]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["coarse", "fine"] | None = Field(
        None, description="Stage to roll back; all configured stages when absent."
    )
