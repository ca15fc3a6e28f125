"""HTTP/1.1 on the wire for the load generator: prepared request bytes, response
parsing, and the server-side time a response reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import orjson

ServerTimingFn = Callable[[Mapping[bytes, bytes], bytes], "tuple[float | None, dict[str, float]]"]


class HTTPProtocolError(RuntimeError):
    """The server's response is not HTTP/1.1 the generator can parse."""


def build_request(
    host: str, port: int, path: str, body: bytes, headers: Mapping[str, str] | None = None
) -> bytes:
    """Serialise one ``POST`` as the bytes written on the wire.

    Args:
        headers: replace the default ``Content-Type``/``Accept`` (``application/json``)
            or add headers (e.g. ``Inference-Header-Content-Length`` of a binary body).
    """
    fields = {"Content-Type": "application/json", "Accept": "application/json"}
    fields.update(headers or {})
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    return head + body


def server_time_ms(headers: Mapping[bytes, bytes], body: bytes) -> float | None:
    """The server-side time of one response, in ms, if the server reports it.

    Looked up in this order: an ``x-server-time-ms`` header; a ``server-timing``
    header entry ``total;dur=<ms>``; the JSON body's ``timing_ms.total``; the
    sum of the JSON body's ``timing_ms`` values. ``None`` when none is present.
    """
    return server_timing(headers, body)[0]


def server_timing(
    headers: Mapping[bytes, bytes], body: bytes
) -> tuple[float | None, dict[str, float]]:
    """``(total ms as in server_time_ms, per-step ms from the body's timing_ms)``."""
    total: float | None = None
    value = headers.get(b"x-server-time-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            total = float(value)
    value = headers.get(b"server-timing")
    if total is None and value is not None:
        for entry in value.split(b","):
            parts = [p.strip() for p in entry.split(b";")]
            if parts and parts[0] == b"total":
                for p in parts[1:]:
                    if p.startswith(b"dur="):
                        with contextlib.suppress(ValueError):
                            total = float(p[4:])
    if not body or body[:1] != b"{":
        return total, {}
    binary_header = headers.get(b"inference-header-content-length")
    try:
        if binary_header is not None:  # a binary answer: the times are in its JSON header
            data = orjson.loads(body[: int(binary_header)])
            data = data.get("parameters") if isinstance(data, dict) else None
        else:
            data = orjson.loads(body)
    except ValueError:
        return total, {}
    timing = data.get("timing_ms") if isinstance(data, dict) else None
    if not isinstance(timing, dict):
        return total, {}
    steps = {
        k: float(v)
        for k, v in timing.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if total is None and steps:
        total = steps["total"] if "total" in steps else sum(steps.values())
    return total, steps


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """Read one HTTP/1.1 response: ``(status, lower-cased headers, body)``.

    Supports ``Content-Length`` and ``Transfer-Encoding: chunked`` bodies.

    Raises:
        HTTPProtocolError: the status line or framing is malformed.
        asyncio.IncompleteReadError: the server closed the connection mid-response.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise HTTPProtocolError(f"bad status line {status_line[:80]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError:
        raise HTTPProtocolError(f"bad status line {status_line[:80]!r}") from None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HTTPProtocolError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HTTPProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                # trailers (usually none) end with an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, headers, b"".join(chunks)
    length = headers.get(b"content-length")
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        raise HTTPProtocolError("response has neither Content-Length nor chunked framing")
    return status, headers, await reader.readexactly(int(length))
