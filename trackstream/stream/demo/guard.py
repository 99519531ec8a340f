"""The demo's connections bounded below the app: a connection cap, a header timeout, a send timeout.

uvicorn's HTTP (h11) and WebSocket protocol classes, subclassed so that:

* at most ``Limits.max_connections`` TCP connections are open at once, pages, WebSockets and
  half-open ones together, and at most ``Limits.max_connections_per_client`` from one client address:
  the next is answered ``503`` and closed at once, so the process never runs out of file descriptors
  (at that point asyncio's accept loop logs an error per attempt and nothing is served) and one client
  cannot take every connection;
* an HTTP request whose headers are not complete ``Limits.header_seconds`` after its first byte (or
  after the connection opened) is closed: slowloris connections hold nothing for long;
* each connection's kernel send buffer is fixed (``Limits.send_buffer_bytes``), so what a client that
  reads nothing can hold is bounded and its sends block soon;
* a WebSocket ``send`` that waits ``Limits.send_seconds`` for a client that reads nothing aborts the
  connection (a plain close would wait for the unread buffer to drain, for ever), and the app can
  abort one at once through the ``trackstream.abort`` ASGI extension (a client that lets its replies
  pile up).

``serve`` runs an app with them, the throttled log, and a descriptor limit checked at start.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from typing import Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from trackstream.stream.demo.limits import Limits, ThrottledLog

__all__ = ["ConnectionGuard", "serve", "server_config"]

log = logging.getLogger("trackstream.stream.demo")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 45\r\n\r\ntoo many connections to the demo; retry later\n"
)
ABORT = "trackstream.abort"  # the ASGI extension: a callable that drops the connection now


class ConnectionGuard:
    """The open transports of one server, and what was refused (``counts``, shown on ``/health``)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.open: dict = {}  # transport -> its client address
        self.per_client: dict = {}  # client address -> open connections
        self.counts = {
            "refused_connections": 0,
            "refused_per_client": 0,
            "header_timeouts": 0,
            "send_timeouts": 0,
            "aborted": 0,
        }

    def admit(self, transport) -> bool:
        peer = transport.get_extra_info("peername")
        client = peer[0] if isinstance(peer, (tuple, list)) and peer else None
        if len(self.open) >= self.limits.max_connections:
            self.counts["refused_connections"] += 1
            log.warning("connection refused: %d open (Limits.max_connections)", len(self.open))
            return False
        if self.per_client.get(client, 0) >= self.limits.per_client_connections:
            self.counts["refused_per_client"] += 1
            log.warning(
                "connection refused: %s holds %d (Limits.max_connections_per_client)", client, self.per_client[client]
            )
            return False
        self.open[transport] = client
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return True

    def release(self, transport) -> None:
        if transport not in self.open:
            return
        client = self.open.pop(transport)
        self.per_client[client] -= 1
        if not self.per_client[client]:
            del self.per_client[client]

    def protocols(self) -> tuple[type, type]:
        """(http, ws) protocol classes bound to this guard, for ``uvicorn.Config(http=..., ws=...)``."""
        return (
            type("GuardedHTTP", (_GuardedHTTP,), {"guard": self}),
            type("GuardedWebSocket", (_GuardedWebSocket,), {"guard": self}),
        )


class _GuardedHTTP(H11Protocol):
    guard: ConnectionGuard
    _header_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.guard.admit(transport):
            transport.write(_BUSY)
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a fixed kernel buffer: a client that reads nothing blocks sends soon (no autotuning)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.guard.limits.send_buffer_bytes)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.guard.limits.header_seconds, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the first bytes of a request: its headers have a deadline
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or the connection was upgraded)
            self._disarm()

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state is h11.IDLE:
            self.guard.counts["header_timeouts"] += 1
            log.warning("closed a connection whose request headers took over %gs", self.guard.limits.header_seconds)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self.transport is not None and self.transport.get_protocol() is self:
            self.guard.release(self.transport)
        super().connection_lost(exc)


class _GuardedWebSocket(WebSocketsSansIOProtocol):
    guard: ConnectionGuard

    def handle_connect(self, event) -> None:
        super().handle_connect(event)  # builds self.scope; the app's task has not started yet
        self.scope["extensions"][ABORT] = self.abort

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (the peer is not reading them)."""
        if not self.transport.is_closing():
            self.guard.counts["aborted"] += 1
        self.transport.abort()

    async def send(self, message) -> None:
        if not self.writable.is_set():  # the client's buffer is full: it gets send_seconds to read
            try:
                await asyncio.wait_for(self.writable.wait(), self.guard.limits.send_seconds)
            except asyncio.TimeoutError:
                self.guard.counts["send_timeouts"] += 1
                log.warning("closed a WebSocket that read nothing for %gs", self.guard.limits.send_seconds)
                self.transport.abort()
                raise ClientDisconnected() from None
        await super().send(message)

    def connection_lost(self, exc) -> None:
        self.guard.release(self.transport)
        super().connection_lost(exc)


def _raise_descriptor_limit(limits: Limits) -> None:
    """Every connection is a descriptor; the model, its files and the loop need some more."""
    need = limits.max_connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise ValueError(
                f"--max-connections {limits.max_connections}: this process may open {hard} files "
                f"(ulimit -Hn); give at most {hard - 64}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def server_config(app, limits: Limits, *, host: str, port: int, log_level: str = "warning"):
    """A ``uvicorn.Config`` for the demo's app with the guard's protocols; (config, guard)."""
    import uvicorn

    _raise_descriptor_limit(limits)
    guard = ConnectionGuard(limits)
    http, ws = guard.protocols()
    ThrottledLog().install("asyncio", "uvicorn.error", "uvicorn.access", "trackstream.stream.demo")
    app.state.guard = guard
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        ws=ws,
        ws_max_size=limits.hard_message_bytes,
        timeout_keep_alive=5,
        log_level=log_level,
    )
    return config, guard


def serve(app, limits: Limits, *, host: str, port: int, log_level: str = "warning") -> None:
    """Run the demo's app until interrupted."""
    import uvicorn

    config, _ = server_config(app, limits, host=host, port=port, log_level=log_level)
    uvicorn.Server(config).run()
