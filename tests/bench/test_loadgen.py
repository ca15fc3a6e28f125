"""The open-loop load generator against tiny local HTTP servers (real sockets).

These tests check the generator's semantics -- the schedule, latency measured
from the due time, error accounting, HTTP framing -- never how fast anything is.
"""

from __future__ import annotations

import asyncio
import math
import time

import orjson
import pytest

from bench.serve.loadgen import (
    LoadGenError,
    OpenLoopGenerator,
    build_request,
    read_response,
    server_time_ms,
    server_timing,
)


class ScriptedServer:
    """HTTP/1.1 keep-alive server whose behaviour per request index is scripted.

    Records, per request (numbered in arrival order across connections), the
    arrival time; the request numbered ``stall_at`` is answered only after
    ``stall_s`` seconds, and ``stall_end`` is the time the stall finished.
    """

    def __init__(
        self,
        stall_at: int | None = None,
        stall_s: float = 0.0,
        fail_at: frozenset[int] = frozenset(),
        never_answer: frozenset[int] = frozenset(),
        chunked: bool = False,
    ) -> None:
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.fail_at = fail_at
        self.never_answer = never_answer
        self.chunked = chunked
        self.arrivals: list[float] = []
        self.bodies: list[bytes] = []
        self.stall_end: float | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                idx = len(self.arrivals)
                self.arrivals.append(time.perf_counter())
                self.bodies.append(body)
                if idx in self.never_answer:
                    await asyncio.sleep(3600)
                if idx == self.stall_at:
                    await asyncio.sleep(self.stall_s)
                    self.stall_end = time.perf_counter()
                status = b"500 Internal Server Error" if idx in self.fail_at else b"200 OK"
                payload = orjson.dumps({"i": idx, "timing_ms": {"total": 0.25}})
                if self.chunked:
                    half = len(payload) // 2
                    chunks = (
                        f"{half:x}\r\n".encode()
                        + payload[:half]
                        + f"\r\n{len(payload) - half:x}\r\n".encode()
                        + payload[half:]
                        + b"\r\n0\r\n\r\n"
                    )
                    writer.write(
                        b"HTTP/1.1 " + status + b"\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 "
                        + status
                        + f"\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


def payloads(port: int, n: int = 3) -> list[bytes]:
    return [build_request("127.0.0.1", port, "/v1/rank", orjson.dumps({"k": k})) for k in range(n)]


def drive(server: ScriptedServer, rate: float, duration: float, **kwargs):
    async def main():
        port = await server.start()
        try:
            gen = OpenLoopGenerator("127.0.0.1", port, payloads(port), **kwargs)
            return await gen.run(rate, duration)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_due_times_follow_the_constant_rate_schedule_and_nothing_leaves_a_tick_early():
    server = ScriptedServer()
    res = drive(server, rate=200.0, duration=0.25, max_connections=4, initial_connections=2)
    assert len(res.due) == 50
    for i, due in enumerate(res.due):
        assert due == pytest.approx(res.start + i / 200.0, abs=1e-9)
    # event-loop timers tick in ~1 ms; a send may precede its due time by at most that
    assert all(s >= d - 2e-3 for s, d in zip(res.sent, res.due))
    assert len(res.ok) == 50 and res.summary()["errors"] == 0
    # the server saw the bodies in schedule order (payload i % 3)
    assert [orjson.loads(b)["k"] for b in server.bodies] == [i % 3 for i in range(50)]


def test_a_stall_shows_in_the_latency_of_every_request_queued_behind_it():
    stall_at, stall_s, rate = 5, 0.2, 100.0
    server = ScriptedServer(stall_at=stall_at, stall_s=stall_s)
    # one connection: requests due during the stall must wait for it
    res = drive(server, rate=rate, duration=0.4, max_connections=1, initial_connections=1)
    assert server.stall_end is not None
    lat = dict(zip(res.ok, res.latencies_ms()))
    svc = dict(zip(res.ok, res.service_ms()))
    queued = [i for i in range(stall_at + 1, len(res.due)) if res.due[i] < server.stall_end]
    assert len(queued) >= 15  # ~20 requests fall due during a 200 ms stall at 100/s
    for i in queued:
        # causality: nothing queued behind the stall can finish before it ends ...
        assert res.sent[i] >= server.stall_end
        # ... so its latency, counted from its due time, includes the wait
        assert lat[i] >= (server.stall_end - res.due[i]) * 1e3
        # while the send→response time alone (a closed-loop client's view) hides it
        assert lat[i] - svc[i] == pytest.approx((res.sent[i] - res.due[i]) * 1e3)
    # the first queued request waited almost the whole stall
    assert lat[queued[0]] >= (stall_s - 1 / rate) * 1e3 - 1.0
    # latencies of queued requests fall as their due times approach the stall's end
    assert lat[queued[0]] > lat[queued[-1]]
    assert res.summary()["p99_ms"] >= (stall_s - 1 / rate) * 1e3 - 1.0


def test_pool_grows_when_requests_are_due_and_no_connection_is_idle():
    server = ScriptedServer(stall_at=2, stall_s=0.1)
    res = drive(server, rate=200.0, duration=0.2, max_connections=8, initial_connections=1)
    assert res.connections > 1
    assert res.connections <= 8
    assert len(res.ok) == len(res.due)


def test_http_errors_and_timeouts_are_counted_not_timed():
    server = ScriptedServer(fail_at=frozenset({1, 4}), never_answer=frozenset({6}))
    res = drive(
        server, rate=100.0, duration=0.1, max_connections=4, initial_connections=2, timeout_s=0.3
    )
    s = res.summary()
    assert s["requests"] == 10
    assert s["error_kinds"] == {"http_500": 2, "timeout": 1}
    assert s["errors"] == 3 and s["ok"] == 7
    assert len(res.latencies_ms()) == 7
    timed_out = res.error.index("timeout")
    assert math.isnan(res.done[timed_out])


def test_server_time_is_read_from_the_json_body_and_chunked_framing_works():
    server = ScriptedServer(chunked=True)
    res = drive(server, rate=100.0, duration=0.05, max_connections=2, initial_connections=1)
    assert len(res.ok) == 5
    assert all(v == 0.25 for v in res.server_ms)
    assert res.summary()["server_time_p50_ms"] == 0.25
    assert res.summary()["server_steps_p50_ms"] == {"total": 0.25}


def test_server_time_sources_in_order_of_preference():
    assert server_time_ms({b"x-server-time-ms": b"1.5"}, b'{"timing_ms": {"total": 9}}') == 1.5
    assert server_time_ms({b"server-timing": b"db;dur=1, total;dur=2.5"}, b"") == 2.5
    assert server_time_ms({}, b'{"timing_ms": {"total": 3.0, "model": 1.0}}') == 3.0
    assert server_time_ms({}, b'{"timing_ms": {"parse": 1.0, "model": 0.5}}') == 1.5
    assert server_time_ms({}, b'{"items": []}') is None
    assert server_time_ms({}, b"not json") is None
    assert server_timing({}, b'{"timing_ms": {"parse": 1.0, "model": 0.5, "x": true}}') == (
        1.5,
        {"parse": 1.0, "model": 0.5},
    )


def test_read_response_rejects_a_garbage_status_line():
    from bench.serve.loadgen import HTTPProtocolError

    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(b"SMTP ready\r\n\r\n")
        reader.feed_eof()
        await read_response(reader)

    with pytest.raises(HTTPProtocolError, match="bad status line"):
        asyncio.run(main())


def test_unreachable_target_is_a_clear_error():
    async def main():
        # a port that was just free: nothing listens there
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        srv.close()
        await srv.wait_closed()
        gen = OpenLoopGenerator("127.0.0.1", port, payloads(port), initial_connections=1)
        await gen.run(10.0, 0.1)

    with pytest.raises(LoadGenError, match="cannot connect"):
        asyncio.run(main())


def test_bad_arguments_are_refused():
    with pytest.raises(LoadGenError, match="no request payloads"):
        OpenLoopGenerator("127.0.0.1", 1, [])
    with pytest.raises(LoadGenError, match="max_connections"):
        OpenLoopGenerator("127.0.0.1", 1, [b"x"], max_connections=2, initial_connections=3)
