"""uvicorn's HTTP/1.1 protocol with two bounds a public service needs: a connection whose
request head has not arrived within ``header_timeout`` seconds (of connecting, or of the
previous response on a kept-alive connection) is closed, and a connection beyond
``max_connections`` is closed as it is accepted.

Without them a client that opens sockets and sends half a request line (slowloris) holds each
socket, and its file descriptor, for ever (plain uvicorn has no timeout for a request head), and
enough of them exhaust the process's descriptors, after which nobody is served. Requests under
way are never cut by this: only a connection waiting for a request head.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """See the module docstring; the bounds are class attributes (:func:`configure`)."""

    header_timeout: float = 30.0
    max_connections: int = 2048

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        self._waiting_on: Any = self.cycle  # the cycle current when the wait for a head began
        self._head_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _expire(self) -> None:
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if cycle is self._waiting_on and idle and not self.transport.is_closing():
            self.transport.close()  # no request head arrived in time

    def on_response_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


def configure(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """Set the bounds for this process and return the protocol class to give uvicorn."""
    GuardedH11Protocol.header_timeout = header_timeout
    GuardedH11Protocol.max_connections = max_connections
    return GuardedH11Protocol
