"""The OpenAPI operation of ``POST /v1/rank``, a bare ASGI route that FastAPI does not
document itself (the app factory adds it to the generated document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from service.api.responses import JSON_MEDIA
from service.api.schemas import (
    EXAMPLE_IDS,
    EXAMPLE_INLINE,
    ErrorResponse,
    RankRequest,
    RankResponse,
)

_ERRORS = {
    408: "body not received within the configured time",
    413: "body larger than the configured limit",
    415: "Content-Type is not application/json",
    422: "invalid field (named in detail[].loc)",
    503: "overloaded (too many requests in flight, or queued past the deadline; see "
    "Retry-After), or the stage's model is not loaded yet",
}


def _schema_ref(name: str) -> dict[str, Any]:
    return {JSON_MEDIA: {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def openapi_operation() -> tuple[dict[str, Any], list[tuple[type[BaseModel], JsonSchemaMode]]]:
    """The OpenAPI operation of ``POST /v1/rank`` and the models its ``$ref``s name.

    Returns:
        ``(operation, models)``: the operation object for ``paths["/v1/rank"]["post"]``
        and ``(model, mode)`` pairs whose schemas belong in ``components.schemas``
        (``validation`` for the request body, ``serialization`` for responses, as FastAPI
        renders them).
    """
    responses: dict[str, Any] = {
        "200": {"description": "Successful Response", "content": _schema_ref("RankResponse")}
    }
    for status, text in _ERRORS.items():
        responses[str(status)] = {"description": text, "content": _schema_ref("ErrorResponse")}
    body = _schema_ref("RankRequest")
    body[JSON_MEDIA]["examples"] = {"ids": EXAMPLE_IDS, "inline": EXAMPLE_INLINE}
    operation = {
        "tags": ["ranking"],
        "summary": "Rank candidates for a user",
        "description": "Score `candidates` for `user_id` with the coarse and/or fine light "
        "net; best first.\n\nIds are int64. `unknown_item_ids` lists candidates scored "
        "with default\nfeatures; `degraded` is true when the feature store could not answer.",
        "operationId": "rank_v1_rank_post",
        "requestBody": {"content": body, "required": True},
        "responses": responses,
    }
    return operation, [
        (RankRequest, "validation"),
        (RankResponse, "serialization"),
        (ErrorResponse, "serialization"),
    ]
