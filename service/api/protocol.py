"""uvicorn's httptools protocol with a header read deadline.

uvicorn arms its keep-alive timer only after a response, so a client that opens a
connection and sends its request line and headers slowly (or never) holds the
connection indefinitely. This protocol closes a connection whose request headers
are not complete within ``header_timeout_s`` of the connection opening or of the
request's first byte. The body has its own deadline in the rank endpoint.

It also puts the connection (transport and socket descriptor) into each request's
scope (:data:`CONNECTION`), so the rank endpoint can ask whether the client has
closed the connection before it scores a queued request (:func:`peer_closed`): the
event loop may not have handled the client's FIN yet when a rank thread picks the
request up.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import ENV_PREFIX, Settings

#: scope key of ``(transport, socket descriptor)`` (absent outside this protocol)
CONNECTION = "rocketrank.connection"


def peer_closed(connection: tuple[asyncio.Transport, int] | None) -> bool:
    """Whether the client closed the connection: its transport is closing (the loop
    saw EOF or an error), or a FIN or reset is waiting in the kernel.

    Callable from a rank thread: reads nothing (``MSG_PEEK``), never blocks. The
    transport is asked again after the peek: while it is not closing the descriptor
    is still its own (it is closed, and may be reused, only after closing began), so
    the peek looked at this client's socket. False when unknown (no connection).
    """
    if connection is None:
        return False
    transport, fd = connection
    if transport.is_closing():
        return True
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return True  # closed meanwhile
    try:
        eof = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        eof = False  # open, nothing more sent
    except OSError:
        eof = True  # reset, or closed meanwhile
    finally:
        sock.detach()  # the transport owns the descriptor
    return transport.is_closing() or eof


def header_timeout_s() -> float:
    """``ROCKETRANK_HEADER_TIMEOUT_S`` (the setting's default when unset).

    Read from the environment because uvicorn builds the protocol in each worker
    process from an import string; ``rocketrank serve`` validated the value already.
    """
    value = os.environ.get(ENV_PREFIX + "HEADER_TIMEOUT_S")
    return float(value) if value else float(Settings.model_fields["header_timeout_s"].default)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` closing connections whose headers arrive too slowly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s()
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else None
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._fd is not None:
            self.scope[CONNECTION] = (self.transport, self._fd)  # type: ignore[literal-required]
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


#: uvicorn's ``http`` option (an import string: worker processes import it themselves)
PROTOCOL = "service.api.protocol:HeaderDeadlineProtocol"
