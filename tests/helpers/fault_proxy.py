"""A TCP proxy that delays every chunk it forwards: the "slow Redis" fault.

``DelayProxy(upstream_host, upstream_port)`` listens on a free loopback port
and forwards bytes both ways; ``proxy.delay_s`` may be changed at any time and
applies to every chunk forwarded afterwards (so a reply that was due in 0.1 ms
arrives ``delay_s`` later). Nothing about the protocol is parsed, which is the
point: the client under test sees a live TCP peer that answers late, not a
refused connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DelayProxy:
    """Threaded loopback TCP proxy with an adjustable per-chunk delay.

    Args:
        upstream_host: where to forward to.
        upstream_port: port of the upstream server.
        delay_s: initial delay added before each forwarded chunk.

    Attributes:
        port: the proxy's listening port on 127.0.0.1.
    """

    def __init__(self, upstream_host: str, upstream_port: int, delay_s: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        """Stop accepting and drop every open connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                delay = self.delay_s
                if delay > 0:
                    time.sleep(delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            # One side gone: shut both down so the other pump and both peers notice.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
