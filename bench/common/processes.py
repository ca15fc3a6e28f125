"""Start a server under test as a separate process, wait until ready, stop it.

The server gets its own session (process group), so stopping it also stops any
uvicorn worker processes it forked, and nothing else. Its output goes to a log
file whose tail is shown when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message holds its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server command run in its own session, ready when ``ready_path`` answers 200.

    Args:
        cmd: the command line (``sys.executable -m ...``).
        port: the port the command listens on.
        env: extra environment variables.
        ready_path: polled with GET until it returns 200.
        cwd: working directory.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/readyz",
        cwd: str | Path | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.port = port
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        # closed in __exit__ (the log must outlive start() for log_tail)
        self.log = tempfile.NamedTemporaryFile(prefix="rocketrank-bench-", suffix=".log")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{' '.join(self.cmd)} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(
            f"{self.ready_url} not ready after {timeout_s:g} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()


__all__ = ["ServerProcess", "ServerStartError", "free_port"]
