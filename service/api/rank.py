"""``POST /v1/rank``: read the body (size-limited), then parse, fetch features,
score and serialise in the service's thread pool, so large requests never block
the event loop (small bodies against the embedded store, whose work is shorter
than the thread hand-off, run inline).

Requests are served by :class:`RankEndpoint`, a bare ASGI app: FastAPI's
routing, dependency injection and response classes cost about as much CPU as
scoring the candidates (see docs/BENCHMARKS.md). The OpenAPI document describes the endpoint through
:func:`openapi_operation` (the app factory adds it to the generated document).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api import binary
from service.api.deps import ServiceState
from service.api.parsing import RequestError, error, parse_rank_request
from service.api.schemas import (
    EXAMPLE_IDS,
    EXAMPLE_INLINE,
    ErrorResponse,
    RankRequest,
    RankResponse,
)
from service.ranking.ranker import RankResult
from service.ranking.values import FeatureValueError

log = logging.getLogger(__name__)

_JSON = "application/json"
_JSON_TYPE = [(b"content-type", b"application/json")]
# A worker buffers at most this many body bytes of requests still being read; beyond it
# new bodies are refused (503), so slow clients cannot hold memory without bound.
_BUFFERED_BODY_BYTES = 256 * 1024 * 1024
# Bodies up to this size (about 1,000 ids) are processed on the event loop when the store
# never does network I/O: the thread hand-off would cost more than the work itself.
_INLINE_BODY_BYTES = 16 * 1024
_INLINE_STORES = frozenset({"embedded"})
# (metric, label values) -> child; children are never removed from these metrics.
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: prometheus_client's lookup takes a lock and
    builds a tuple per call, a dozen times per request (see docs/BENCHMARKS.md)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def check_content_type(value: str | None) -> None:
    """JSON bodies only: ``application/json`` or ``application/*+json``; absent is accepted.

    Raises:
        RequestError: 415 naming the ``content-type`` header.
    """
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == _JSON or (media.startswith("application/") and media.endswith("+json")):
        return
    raise RequestError(
        415,
        [
            {
                "loc": ["header", "content-type"],
                "msg": f"expected {_JSON}, got {media or 'an empty media type'!r}",
                "type": "content_type",
            }
        ],
    )


def _detail(exc: RequestError) -> bytes:
    return orjson.dumps({"detail": exc.detail})


def _serialize(request_id: str, stage: str, result: RankResult, start: float) -> bytes:
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


class Abandoned:
    """Set by the event loop when the client of a queued request disconnects."""

    __slots__ = ("disconnected",)

    def __init__(self) -> None:
        self.disconnected = False


# status of a request that is not answered (its client left before it was scored)
NOT_ANSWERED = 0


def process(
    state: ServiceState,
    body: bytes,
    start: float,
    received: float,
    abandoned: Abandoned | None = None,
    codec: binary.BinaryExchange | None = None,  # binary bodies/answers (service.api.binary)
) -> tuple[int, bytes, str]:
    """Parse → rank → serialise one request. Returns ``(status, body, stage label)``.

    A request past its deadline (``request_deadline_ms`` after it arrived) is answered
    503 and one whose client left is not answered (:data:`NOT_ANSWERED`); neither is
    scored.

    Args:
        start: when the handler began (``total`` counts from here).
        received: when the body was read (the gap to now is the thread-pool wait).
        abandoned: the disconnect flag of a request that waited in the thread pool.
    """
    settings = state.settings
    t = time.perf_counter()
    if abandoned is not None and abandoned.disconnected:
        _child(state.metrics.shed, "disconnected").inc()
        return NOT_ANSWERED, b"", "invalid"
    if (t - start) * 1e3 > settings.request_deadline_ms:
        _child(state.metrics.shed, "deadline").inc()
        message = f"not started within the {settings.request_deadline_ms:g} ms deadline"
        return 503, orjson.dumps({"detail": message}), "invalid"
    wait_ms = (t - received) * 1e3
    read_ms = (received - start) * 1e3
    try:
        request_id, query = (codec.parse if codec else parse_rank_request)(body, settings)
    except RequestError as exc:
        return exc.status, _detail(exc), "invalid"
    parse_ms = (time.perf_counter() - t) * 1e3
    roles = query.roles
    configured = settings.stage_models
    missing = [r for r in roles if r not in configured]
    if missing:
        exc = error(["stage"], f"stage {query.stage!r} needs a {missing[0]} model, which this "
                    "service is not configured to serve", "stage_unavailable")  # fmt: skip
        return exc.status, _detail(exc), query.stage
    models = state.registry.snapshot()
    not_loaded = [r for r in roles if r not in models]
    if not_loaded:
        message = f"no {not_loaded[0]} model is loaded yet; try again later"
        return 503, orjson.dumps({"detail": message}), query.stage
    try:
        result = state.ranker.rank(query, models)
    except FeatureValueError as exc:
        return 422, _detail(error(list(exc.loc), str(exc), "feature_value")), query.stage
    except Exception:
        log.exception("rank request %s failed", request_id)
        return 500, orjson.dumps({"detail": "internal error"}), query.stage
    result.timing_ms = {"read": read_ms, "queue": wait_ms, "parse": parse_ms, **result.timing_ms}
    encode = codec.serialize if codec and codec.binary_response else _serialize
    payload = encode(request_id, query.stage, result, start)
    observe = state.metrics.step_duration
    for step, ms in result.timing_ms.items():
        if step != "total":
            _child(observe, step).observe(ms / 1e3)
    _child(state.metrics.candidates, query.stage).observe(len(query.candidate_ids))
    return 200, payload, query.stage


async def _run(
    state: ServiceState,
    body: bytes,
    start: float,
    receive: Receive,
    codec: binary.BinaryExchange | None = None,
) -> tuple[int, bytes, str]:
    if len(body) <= _INLINE_BODY_BYTES and state.store.kind in _INLINE_STORES:
        return process(state, body, start, time.perf_counter(), None, codec)
    loop = asyncio.get_running_loop()
    abandoned = Abandoned()
    watcher = loop.create_task(_watch_disconnect(receive, abandoned))
    try:
        return await loop.run_in_executor(
            state.executor, process, state, body, start, time.perf_counter(), abandoned, codec
        )
    finally:
        watcher.cancel()


async def _watch_disconnect(receive: Receive, abandoned: Abandoned) -> None:
    """Wait for ``http.disconnect`` of a request whose body was read (cancelled when done)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            abandoned.disconnected = True
            return


def _observe(state: ServiceState, stage: str, status: int, start: float) -> float:
    seconds = time.perf_counter() - start
    metrics = state.metrics
    _child(metrics.requests, stage, str(status)).inc()
    _child(metrics.request_duration, stage).observe(seconds)
    return seconds


def _busy(state: ServiceState) -> RequestError:
    _child(state.metrics.shed, "overload").inc()
    return RequestError(
        503,
        [{"loc": [], "msg": "overloaded: too many requests in flight", "type": "overloaded"}],
    )


class RankEndpoint:
    """``POST /v1/rank`` as a bare ASGI app (see the module docstring for why).

    Admission control, cheapest first: over ``max_inflight`` requests in this worker →
    503 with ``Retry-After`` before any work (the body is dropped as it is read); a
    ``Content-Length`` over the limit → 413 before reading; a body not received within
    ``body_timeout_s`` → 408; the in-flight check again once the body is in (the thread
    pool never holds more than ``max_inflight`` requests); then the deadline and
    disconnect checks in :func:`process`. Refusals that leave the body unread close the connection.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        state: ServiceState = scope["app"].state.service
        settings = state.settings
        codec = binary.negotiate(scope["headers"])  # None: a JSON body and answer
        length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        close = False
        try:
            if state.inflight >= settings.max_inflight:
                # refused before any work; the body is read and dropped (never held) so
                # the connection stays usable and the client surely sees the 503
                close = not await _drain(receive, settings.max_body_bytes)
                raise _busy(state)
            close = True  # until the whole body is read
            if codec is None or not codec.binary_request:
                check_content_type(content_type)
            try:
                async with asyncio.timeout(settings.body_timeout_s):
                    body = await _receive_body(state, receive, length, settings.max_body_bytes)
            except TimeoutError:
                _child(state.metrics.shed, "body_timeout").inc()
                raise RequestError(
                    408,
                    [
                        {
                            "loc": ["body"],
                            "msg": f"body not received within {settings.body_timeout_s:g} s",
                            "type": "body_timeout",
                        }
                    ],
                ) from None
            if body is None:
                return  # the client went away; nobody to answer
            close = False
            if state.inflight >= settings.max_inflight:
                raise _busy(state)
            state.inflight += 1
        except RequestError as exc:
            status, payload, stage = exc.status, _detail(exc), "invalid"
        else:
            try:
                status, payload, stage = await _run(state, body, start, receive, codec)
            finally:
                state.inflight -= 1
        if status == NOT_ANSWERED:
            return
        seconds = _observe(state, stage, status, start)
        headers = [
            (b"content-length", str(len(payload)).encode()),
            *(codec.response_headers(status) if codec else _JSON_TYPE),
            (b"server-timing", f"total;dur={seconds * 1e3:.3f}".encode()),
        ]
        if status == 503:
            headers.append((b"retry-after", str(settings.retry_after_s).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and drop a body of at most ``limit`` bytes; False when it was not read whole."""
    received = 0
    more = True
    while more and received <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return False
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    return not more


async def _receive_body(
    state: ServiceState, receive: Receive, declared: str | None, limit: int
) -> bytes | None:
    """The request body; more than ``limit`` bytes is refused with 413.

    Nothing of an oversized body is kept: once the declared ``Content-Length`` or the
    bytes received pass the limit, further chunks are discarded, and at most ``limit``
    more bytes are read (so a client that is still sending gets the 413 instead of a
    reset) before the answer; the connection is then closed. Bytes held count against
    the worker's buffer budget.

    Returns:
        The body, or None when the client disconnected.

    Raises:
        RequestError: 400 (bad Content-Length), 413 (too large), 503 (buffer budget).
    """
    try:
        size = int(declared) if declared is not None else None
    except ValueError:
        raise error([], "invalid Content-Length header", "header", status=400) from None
    if size is not None and size > 2 * limit:
        raise error([], f"body of {size} bytes exceeds the limit of {limit}", "too_large", 413)
    too_large = size is not None and size > limit
    chunks: list[bytes] = []
    received = held = 0
    more = True
    try:
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if received > limit and not too_large:
                too_large = True
                state.buffered_bytes -= held
                held = 0
                chunks.clear()
            if too_large:
                if received > 2 * limit:
                    break
                continue
            held += len(chunk)
            state.buffered_bytes += len(chunk)
            if more and state.buffered_bytes > _BUFFERED_BODY_BYTES:
                raise _busy(state)
            chunks.append(chunk)
    finally:
        state.buffered_bytes -= held
    if too_large:
        shown = size if size is not None else f"more than {limit}"
        raise error([], f"body of {shown} bytes exceeds the limit of {limit}", "too_large", 413)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: The route the app factory mounts (``service.app``); documented by openapi_operation().
route = Route("/v1/rank", RankEndpoint(), methods=["POST"], include_in_schema=False)

_ERRORS = {
    408: "body not received within the configured time",
    413: "body larger than the configured limit",
    415: "Content-Type is not application/json",
    422: "invalid field (named in detail[].loc)",
    503: "overloaded (too many requests in flight, or queued past the deadline; see "
    "Retry-After), or the stage's model is not loaded yet",
}


def _schema_ref(name: str) -> dict[str, Any]:
    return {_JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}


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
    body[_JSON]["examples"] = {"ids": EXAMPLE_IDS, "inline": EXAMPLE_INLINE}
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
