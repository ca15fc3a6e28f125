"""``POST /v1/rank``: read the body (size-limited), then parse, fetch features,
score and serialise in the service's thread pool, so large requests never block
the event loop (small bodies against the embedded store, whose work is shorter
than the thread hand-off, run inline).

Requests are served by :class:`RankEndpoint`, a bare ASGI app: FastAPI's
routing, dependency injection and response classes cost about as much CPU as
scoring the candidates (see docs/BENCHMARKS.md). The OpenAPI document describes the endpoint through
:func:`service.api.rank_openapi.openapi_operation` (the app factory adds it to the generated
document).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api import binary
from service.api.admission import busy, check_content_type, drain, receive_body
from service.api.deps import ServiceState
from service.api.parsing import RequestError, error, parse_rank_request
from service.api.protocol import CONNECTION, peer_closed
from service.api.rank_metrics import child, observe_request
from service.api.responses import JSON_TYPE, detail, serialize
from service.ranking.values import FeatureValueError

log = logging.getLogger(__name__)

# Bodies up to this size (about 1,000 ids) are processed on the event loop when the store
# never does network I/O: the thread hand-off would cost more than the work itself.
_INLINE_BODY_BYTES = 16 * 1024
_INLINE_STORES = frozenset({"embedded"})


class Abandoned:
    """Whether the client of a queued request has left: set by the event loop on
    ``http.disconnect``, or seen in the kernel (the loop may not have read the FIN yet)."""

    __slots__ = ("connection", "disconnected")

    def __init__(self, connection: tuple[asyncio.Transport, int] | None = None) -> None:
        self.disconnected = False
        self.connection = connection

    def gone(self) -> bool:
        return self.disconnected or peer_closed(self.connection)


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
    if abandoned is not None and abandoned.gone():
        child(state.metrics.shed, "disconnected").inc()
        return NOT_ANSWERED, b"", "invalid"
    if (t - start) * 1e3 > settings.request_deadline_ms:
        child(state.metrics.shed, "deadline").inc()
        message = f"not started within the {settings.request_deadline_ms:g} ms deadline"
        return 503, orjson.dumps({"detail": message}), "invalid"
    wait_ms = (t - received) * 1e3
    read_ms = (received - start) * 1e3
    try:
        request_id, query = (codec.parse if codec else parse_rank_request)(body, settings)
    except RequestError as exc:
        return exc.status, detail(exc), "invalid"
    parse_ms = (time.perf_counter() - t) * 1e3
    roles = query.roles
    configured = settings.stage_models
    missing = [r for r in roles if r not in configured]
    if missing:
        exc = error(["stage"], f"stage {query.stage!r} needs a {missing[0]} model, which this "
                    "service is not configured to serve", "stage_unavailable")  # fmt: skip
        return exc.status, detail(exc), query.stage
    models = state.registry.snapshot()
    not_loaded = [r for r in roles if r not in models]
    if not_loaded:
        message = f"no {not_loaded[0]} model is loaded yet; try again later"
        return 503, orjson.dumps({"detail": message}), query.stage
    try:
        result = state.ranker.rank(query, models)
    except FeatureValueError as exc:
        return 422, detail(error(list(exc.loc), str(exc), "feature_value")), query.stage
    except Exception:
        log.exception("rank request %s failed", request_id)
        return 500, orjson.dumps({"detail": "internal error"}), query.stage
    result.timing_ms = {"read": read_ms, "queue": wait_ms, "parse": parse_ms, **result.timing_ms}
    encode = codec.serialize if codec and codec.binary_response else serialize
    payload = encode(request_id, query.stage, result, start)
    observe = state.metrics.step_duration
    for step, ms in result.timing_ms.items():
        if step != "total":
            child(observe, step).observe(ms / 1e3)
    child(state.metrics.candidates, query.stage).observe(len(query.candidate_ids))
    return 200, payload, query.stage


async def _run(
    state: ServiceState,
    body: bytes,
    start: float,
    receive: Receive,
    codec: binary.BinaryExchange | None = None,
    connection: tuple[asyncio.Transport, int] | None = None,
) -> tuple[int, bytes, str]:
    if len(body) <= _INLINE_BODY_BYTES and state.store.kind in _INLINE_STORES:
        return process(state, body, start, time.perf_counter(), None, codec)
    loop = asyncio.get_running_loop()
    abandoned = Abandoned(connection)
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
                close = not await drain(receive, settings.max_body_bytes)
                raise busy(state)
            close = True  # until the whole body is read
            if codec is None or not codec.binary_request:
                check_content_type(content_type)
            try:
                async with asyncio.timeout(settings.body_timeout_s):
                    body = await receive_body(state, receive, length, settings.max_body_bytes)
            except TimeoutError:
                child(state.metrics.shed, "body_timeout").inc()
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
                raise busy(state)
            state.inflight += 1
        except RequestError as exc:
            status, payload, stage = exc.status, detail(exc), "invalid"
        else:
            try:
                status, payload, stage = await _run(
                    state, body, start, receive, codec, scope.get(CONNECTION)
                )
            finally:
                state.inflight -= 1
        if status == NOT_ANSWERED:
            return
        seconds = observe_request(state, stage, status, start)
        headers = [
            (b"content-length", str(len(payload)).encode()),
            *(codec.response_headers(status) if codec else JSON_TYPE),
            (b"server-timing", f"total;dur={seconds * 1e3:.3f}".encode()),
        ]
        if status == 503:
            headers.append((b"retry-after", str(settings.retry_after_s).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


#: The route the app factory mounts (``service.app``); documented by
#: rank_openapi.openapi_operation().
route = Route("/v1/rank", RankEndpoint(), methods=["POST"], include_in_schema=False)
