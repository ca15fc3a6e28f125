"""An open-loop HTTP/1.1 load generator on raw asyncio streams.

Open loop means the schedule does not wait for the server: request ``i`` is
*due* at ``start + i / rate`` whether or not earlier requests have been
answered, and its latency is measured from that due time, not from the moment
a connection happened to be free to send it. A server that stalls for 200 ms
therefore shows 200 ms, 190 ms, 180 ms, ... in the latencies of the requests
that queued behind the stall; a closed-loop client (send, wait, send) would
simply send fewer requests during the stall and report a handful of slow ones
-- the *coordinated omission* that makes p99 lie.

Mechanics, chosen so one Python process can offer 1,000 requests/s of
~100 KB bodies on a 2-core machine:

* every request is serialised once before the run (headers + body in one
  ``bytes``); the generator only writes prepared bytes;
* keep-alive HTTP/1.1 connections on ``asyncio`` streams, one request in
  flight per connection; a pool opened before the run and grown on demand (up
  to ``max_connections``) whenever a request is due and no connection is idle;
* the dispatcher sleeps until each due time and hands the request index to the
  pool through a queue; a request that waits in the queue past its deadline
  is counted as a timeout without being sent.

Times are ``time.perf_counter()`` (uvloop's ``loop.time()`` only has
millisecond resolution). Event-loop timers fire on a ~1 ms tick, so a request
may leave up to one tick *before* its due time; its latency is then measured
from the send time, i.e. latency = done − min(due, sent), which never
understates the time the server took.

Every request records its due time, the time its bytes were written and the
time its response was complete, so the client's own lag (``send - due``) is
reported next to the latencies: if it is large the generator, not the server,
is the bottleneck.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common.percentiles import summarise
from bench.serve.http_wire import (
    HTTPProtocolError,
    ServerTimingFn,
    build_request,
    read_response,
    server_time_ms,
    server_timing,
)


class LoadGenError(RuntimeError):
    """The generator cannot run (bad arguments, target unreachable before the run)."""


@dataclass
class RunResult:
    """Per-request records of one open-loop run (times in seconds, ``perf_counter`` clock).

    Attributes:
        rate: offered requests per second.
        duration_s: scheduled duration (``n / rate``).
        start: due time of request 0.
        due: due time of every request (``start + i / rate``).
        sent: time its bytes were written, ``NaN`` if never sent.
        done: time its response was complete, ``NaN`` if none.
        status: HTTP status, 0 for a transport error or timeout.
        error: ``None``, ``"timeout"``, ``"connection"``, ``"protocol"`` or ``"http_<code>"``.
        server_ms: server-reported time of successful responses (``NaN`` if absent).
        server_steps: server-reported per-step times (the body's ``timing_ms``) per request.
        connections: connections opened during the run.
    """

    rate: float
    duration_s: float
    start: float
    due: list[float]
    sent: list[float]
    done: list[float]
    status: list[int]
    error: list[str | None]
    server_ms: list[float]
    server_steps: list[dict[str, float]] = field(default_factory=list)
    connections: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[int]:
        """Indices of requests answered with a 2xx in time."""
        return [i for i, e in enumerate(self.error) if e is None]

    def latencies_ms(self) -> list[float]:
        """``done − min(due, sent)`` in ms, successful requests only (see module doc)."""
        return [(self.done[i] - min(self.due[i], self.sent[i])) * 1e3 for i in self.ok]

    def service_ms(self) -> list[float]:
        """Send → response complete (what a closed-loop client would report)."""
        return [(self.done[i] - self.sent[i]) * 1e3 for i in self.ok]

    def send_lag_ms(self) -> list[float]:
        """Due → sent: the generator's own delay (includes waiting for a free connection)."""
        return [(s - d) * 1e3 for s, d in zip(self.sent, self.due) if not math.isnan(s)]

    def summary(self) -> dict[str, Any]:
        """Achieved QPS, errors and latency percentiles as a JSON-ready dict.

        ``qps`` is successful responses divided by the time from the first due
        time to the last response (so a server that falls behind shows a QPS
        below the offered rate).
        """
        ok = self.ok
        finished = [self.done[i] for i in ok]
        window = (max(finished) - self.start) if finished else 0.0
        window = max(window, self.duration_s)
        lat = summarise(self.latencies_ms())
        svc = summarise(self.service_ms())
        lag = summarise(self.send_lag_ms())
        server = summarise([self.server_ms[i] for i in ok if not math.isnan(self.server_ms[i])])
        errors = Counter(e for e in self.error if e is not None)
        steps: dict[str, list[float]] = {}
        for i in ok:
            if i < len(self.server_steps):
                for k, v in self.server_steps[i].items():
                    steps.setdefault(k, []).append(v)
        return {
            "offered_rate": self.rate,
            "duration_s": self.duration_s,
            "requests": len(self.due),
            "ok": len(ok),
            "errors": sum(errors.values()),
            "error_kinds": dict(sorted(errors.items())),
            "qps": len(ok) / window if window > 0 else 0.0,
            **{k: lat[k] for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "mean_ms", "max_ms")},
            "service_p50_ms": svc["p50_ms"],
            "service_p99_ms": svc["p99_ms"],
            "server_time_p50_ms": server["p50_ms"],
            "server_time_p99_ms": server["p99_ms"],
            "server_time_count": server["count"],
            "server_steps_p50_ms": {k: summarise(v)["p50_ms"] for k, v in steps.items()},
            "send_lag_p50_ms": lag["p50_ms"],
            "send_lag_p99_ms": lag["p99_ms"],
            "connections": self.connections,
        }


class _Connection:
    """One keep-alive HTTP/1.1 connection (one request in flight at a time)."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class OpenLoopGenerator:
    """Sends prepared requests to one HTTP server on a constant-rate schedule.

    Args:
        host: server address.
        port: server port.
        payloads: prepared request bytes (:func:`build_request`); request ``i``
            sends ``payloads[i % len(payloads)]``.
        max_connections: upper bound of the connection pool.
        initial_connections: connections opened before the first due time
            (so connect cost does not land on the first requests).
        timeout_s: a request not answered within this time *after its due time*
            is an error (``"timeout"``); its connection is closed and replaced.
        server_timing: extracts ``(total, steps)`` server-side times from a response
            (:func:`server_timing` by default).
    """

    def __init__(
        self,
        host: str,
        port: int,
        payloads: Sequence[bytes],
        *,
        max_connections: int = 256,
        initial_connections: int = 4,
        timeout_s: float = 2.0,
        server_timing: ServerTimingFn = server_timing,
    ) -> None:
        if not payloads:
            raise LoadGenError("no request payloads to send")
        if max_connections < 1 or not 0 <= initial_connections <= max_connections:
            raise LoadGenError(
                "need 1 <= max_connections and 0 <= initial_connections <= max_connections, "
                f"got {max_connections} and {initial_connections}"
            )
        if timeout_s <= 0:
            raise LoadGenError(f"timeout_s must be positive, got {timeout_s}")
        self.host = host
        self.port = port
        self.payloads = list(payloads)
        self.max_connections = max_connections
        self.initial_connections = initial_connections
        self.timeout_s = timeout_s
        self.server_timing = server_timing

    # Long (~80 lines, a third docstring): dispatcher, workers and pool growth share the
    # run's clock and queues; split apart they would pass six arguments around.
    async def run(self, rate: float, duration_s: float, lead_s: float = 0.05) -> RunResult:
        """Offer ``round(rate * duration_s)`` requests at ``rate`` per second.

        Args:
            rate: requests per second (> 0).
            duration_s: length of the schedule (> 0).
            lead_s: time between the call and request 0's due time, used to open
                the initial connections.

        Returns:
            The per-request :class:`RunResult`.

        Raises:
            LoadGenError: bad arguments, or the initial connections cannot be opened.
        """
        if rate <= 0 or duration_s <= 0:
            raise LoadGenError(f"rate and duration must be positive, got {rate}, {duration_s}")
        n = max(1, round(rate * duration_s))
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        nan = float("nan")
        res = RunResult(
            rate=rate,
            duration_s=n / rate,
            start=0.0,
            due=[0.0] * n,
            sent=[nan] * n,
            done=[nan] * n,
            status=[0] * n,
            error=["timeout"] * n,
            server_ms=[nan] * n,
            server_steps=[{} for _ in range(n)],
        )
        state = {"idle": 0, "workers": 0}
        tasks: list[asyncio.Task[None]] = []

        async def worker(conn: _Connection) -> None:
            try:
                while True:
                    state["idle"] += 1
                    i = await queue.get()
                    state["idle"] -= 1
                    if i is None:
                        return
                    conn = await self._one(conn, i, res)
            finally:
                conn.close()

        async def start_worker(connect: bool) -> None:
            conn = _Connection()
            if connect:
                await conn.open(self.host, self.port)
                res.connections += 1
            state["workers"] += 1
            tasks.append(asyncio.create_task(worker(conn)))

        try:
            await asyncio.gather(*(start_worker(True) for _ in range(self.initial_connections)))
        except OSError as exc:
            for t in tasks:
                t.cancel()
            raise LoadGenError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

        clock = time.perf_counter
        start = clock() + lead_s
        res.start = start
        for i in range(n):
            res.due[i] = start + i / rate
        for i in range(n):
            delay = res.due[i] - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)
            if state["idle"] < queue.qsize() and state["workers"] < self.max_connections:
                await start_worker(False)
        for _ in tasks:
            queue.put_nowait(None)
        # Every request ends by its deadline, so this wait is bounded.
        await asyncio.wait(tasks, timeout=self.timeout_s + 5.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return res

    async def _one(self, conn: _Connection, i: int, res: RunResult) -> _Connection:
        """Send request ``i`` on ``conn`` and record it; returns the connection to reuse."""
        clock = time.perf_counter
        remaining = res.due[i] + self.timeout_s - clock()
        if remaining <= 0:
            return conn  # waited in the queue past its deadline: stays "timeout"
        try:
            async with asyncio.timeout(remaining):
                if conn.writer is None:
                    await conn.open(self.host, self.port)
                    res.connections += 1
                assert conn.writer is not None and conn.reader is not None
                res.sent[i] = clock()
                conn.writer.write(self.payloads[i % len(self.payloads)])
                await conn.writer.drain()
                status, headers, body = await read_response(conn.reader)
            res.done[i] = clock()
        except TimeoutError:
            conn.close()
            return conn
        except HTTPProtocolError:
            res.error[i] = "protocol"
            conn.close()
            return conn
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            res.error[i] = "connection"
            conn.close()
            return conn
        res.status[i] = status
        if 200 <= status < 300:
            res.error[i] = None
            total, steps = self.server_timing(headers, body)
            if total is not None:
                res.server_ms[i] = total
            res.server_steps[i] = steps
        else:
            res.error[i] = f"http_{status}"
        if headers.get(b"connection", b"").lower() == b"close":
            conn.close()
        return conn


def run_load(
    host: str,
    port: int,
    payloads: Sequence[bytes],
    rate: float,
    duration_s: float,
    *,
    warmup_s: float = 0.0,
    **generator_kwargs: Any,
) -> RunResult:
    """Blocking helper: an optional warm-up at the same rate, then one measured run.

    Uses ``uvloop`` when it is installed (less per-request overhead than the
    default loop). The warm-up's results are discarded.
    """
    gen = OpenLoopGenerator(host, port, payloads, **generator_kwargs)

    async def main() -> RunResult:
        if warmup_s > 0:
            await gen.run(rate, warmup_s)
        return await gen.run(rate, duration_s)

    return run_async(main())


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop if available, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


__all__ = [
    "HTTPProtocolError",
    "LoadGenError",
    "OpenLoopGenerator",
    "RunResult",
    "build_request",
    "read_response",
    "run_async",
    "run_load",
    "server_time_ms",
    "server_timing",
]
