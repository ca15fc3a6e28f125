"""Admission of a ``/v1/rank`` request body: the Content-Type check, the size-limited read
(within the worker's buffer budget), draining a refused body, and the overload refusal."""

from __future__ import annotations

from starlette.types import Receive

from service.api.deps import ServiceState
from service.api.parsing import RequestError, error
from service.api.rank_metrics import child
from service.api.responses import JSON_MEDIA

# A worker buffers at most this many body bytes of requests still being read; beyond it
# new bodies are refused (503), so slow clients cannot hold memory without bound.
_BUFFERED_BODY_BYTES = 256 * 1024 * 1024


def check_content_type(value: str | None) -> None:
    """JSON bodies only: ``application/json`` or ``application/*+json``; absent is accepted.

    Raises:
        RequestError: 415 naming the ``content-type`` header.
    """
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == JSON_MEDIA or (media.startswith("application/") and media.endswith("+json")):
        return
    raise RequestError(
        415,
        [
            {
                "loc": ["header", "content-type"],
                "msg": f"expected {JSON_MEDIA}, got {media or 'an empty media type'!r}",
                "type": "content_type",
            }
        ],
    )


def busy(state: ServiceState) -> RequestError:
    """The 503 refusal of a request over the worker's limits (counted as ``overload``)."""
    child(state.metrics.shed, "overload").inc()
    return RequestError(
        503,
        [{"loc": [], "msg": "overloaded: too many requests in flight", "type": "overloaded"}],
    )


async def drain(receive: Receive, limit: int) -> bool:
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


async def receive_body(
    state: ServiceState, receive: Receive, declared: str | None, limit: int
) -> bytes | None:
    """The request body; more than ``limit`` bytes is refused with 413.

    Nothing of an oversized body is kept: once the declared ``Content-Length`` or the
    bytes received pass the limit, further chunks are discarded, and at most ``limit``
    more bytes are read (so a client that is still sending gets the 413 instead of a
    reset) before the answer; the connection is then closed. Bytes held count against
    the worker's buffer budget.

    Returns:
        The body, or None when the client disconnected (counted as ``disconnected``).

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
                # the client left before its body was in: dropped, never scored
                child(state.metrics.shed, "disconnected").inc()
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
                raise busy(state)
            chunks.append(chunk)
    finally:
        state.buffered_bytes -= held
    if too_large:
        shown = size if size is not None else f"more than {limit}"
        raise error([], f"body of {shown} bytes exceeds the limit of {limit}", "too_large", 413)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
