"""Helpers of the fault suite: a served world over real HTTP, client threads
that keep the service under load and record every answer, /metrics parsing,
and the figures the suite measures (recovery time, p99 under fault).

The worlds, artifacts and ``rocketrank serve`` processes come from
``service_fixtures``; this module only adds what the fault tests need on top.
Figures are printed and, when ``ROCKETRANK_RELIABILITY_FIGURES`` names a file,
appended to it as JSON lines (that is how docs/RELIABILITY.md was filled).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import service_fixtures as sf
from prometheus_client.parser import text_string_to_metric_families

FIGURES_ENV = "ROCKETRANK_RELIABILITY_FIGURES"


def record_figure(test: str, **figures: Any) -> None:
    """Print a measured figure and append it to ``$ROCKETRANK_RELIABILITY_FIGURES``."""
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"[reliability] {line}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- the server


class LoggedService(sf.ServiceProcess):
    """``rocketrank serve`` whose output goes to a file, not a pipe.

    A pipe nobody reads fills up after 64 KB of log lines and then blocks the
    server's logging call, which a long fault test with many reloads would hit.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.port = sf.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="rocketrank-fault-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "rocketrank", "serve", *args]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=sf.ROOT, env=full_env, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        super().stop()
        text = self.log()
        self.log_path.unlink(missing_ok=True)
        return text


@contextlib.contextmanager
def running(args: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[LoggedService]:
    """A ready service, stopped (SIGTERM, then SIGKILL) on exit."""
    proc = LoggedService(args, env)
    try:
        proc.wait_ready(timeout=120)
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    """One request made by a load client (times from ``time.monotonic``)."""

    sent: float
    done: float
    status: int  # 0: no HTTP answer (connection refused/reset)
    body: Any
    error: str | None = None

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1e3


class Load:
    """Client threads that POST rank bodies back to back on keep-alive connections.

    Args:
        base: ``http://127.0.0.1:PORT``.
        body: the JSON body, or a function of the request number that returns one.
        clients: concurrent connections.
        path: the endpoint.
    """

    def __init__(
        self,
        base: str,
        body: Mapping[str, Any] | Callable[[int], Mapping[str, Any]],
        clients: int = 3,
        path: str = "/v1/rank",
    ) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.body = body
        self.path = path
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.answers

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= t]

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        """Block until ``n`` more answers arrived."""
        target = len(self.answers) + n
        deadline = time.monotonic() + timeout
        while len(self.answers) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made no progress: {len(self.answers)} answers")
            time.sleep(0.01)

    def _next_body(self) -> bytes:
        with self._lock:
            i = self._counter
            self._counter += 1
        body = self.body(i) if callable(self.body) else self.body
        return json.dumps(body).encode()

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            payload = self._next_body()
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request(
                    "POST", self.path, payload, headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                try:
                    parsed: Any = json.loads(raw)
                except ValueError:
                    parsed = raw.decode(errors="replace")
                answer = Answer(sent, time.monotonic(), status, parsed)
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                answer = Answer(sent, time.monotonic(), 0, None, error=repr(exc))
                time.sleep(0.01)
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- metrics


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics``: ``(name, frozenset(labels.items())) -> value``."""
    status, text = sf.http("GET", base + "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    found = [v for (n, lab), v in scrape(base).items() if n == name and wanted <= lab]
    assert found, f"{name}{labels} is not exposed"
    return sum(found)
