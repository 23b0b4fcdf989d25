"""Hands listener connections from uvicorn's HTTP protocol to the edge's raw protocols.

uvicorn (pinned to 0.54.x in pyproject.toml) takes a protocol class as
``Config(http=...)``. This subclass of its ``HttpToolsProtocol`` looks at each request
once its headers are parsed: a WebSocket upgrade of ``GET /ws/<space>`` and a plain
``GET /listen/<space>.opus`` leave ASGI — the transport is given to a ``WsListener`` /
``OggListener`` (``transport.set_protocol``) — and everything else goes on to the ASGI app
exactly as before. The listener protocols join uvicorn's connection set, so a graceful
shutdown calls their ``shutdown()`` too (1001 / the end of the Ogg stream) and waits for
them.

Every HTTP process (edge or not) also guards its front door here (``GuardedHttpProtocol``):
a connection must deliver its request head within a bound or is dropped; connections that
are not listeners are capped per process (503 + Retry-After past the cap); and an answer
sent before the request's body was read (413, any early refusal) is followed by a lingering
close — our side half-closed, the rest of the body read and discarded for a bounded time —
so that a client that sends its whole body before reading still gets the answer instead of
a reset.

What we rely on in uvicorn: ``on_message_begin``/``on_headers_complete``/``on_body``/
``on_message_complete``/``on_response_complete``/``handle_websocket_upgrade`` as the
parser's hooks, ``self.url``, ``self.headers``, ``self.client``, ``self.config``,
``self.flow``, ``self.scope["method"]``, ``self.cycle`` (and its ``transport``),
``self.connections``, ``_unset_keepalive_if_required`` and the proxy-headers middleware's
``_TrustedHosts``. tests/unit/test_edge_handoff.py runs it against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
import re
import urllib.parse
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from townhall.edge import metrics
from townhall.edge.connection import ListenerConnection, ListenRequest
from townhall.edge.gate import EdgeNode
from townhall.edge.guard import (
    CONNECTIONS_RETRY_S,
    LINGER_BYTES,
    LINGER_S,
    ConnectionCap,
    header_timeout_from_env,
    max_connections_from_env,
)
from townhall.edge.ogghttp import OggListener
from townhall.edge.websocket import WsListener
from townhall.edge.wire import problem_response
from townhall.problems import Unavailable

# Space ids are [a-z0-9]{10} (room.rules); anything far from that (NATS wildcards, dots)
# never reaches the bus: the ASGI app answers it (404).
WS_PATH = re.compile(r"/ws/([A-Za-z0-9_-]{1,64})")
OGG_PATH = re.compile(r"/listen/([A-Za-z0-9_-]{1,64})\.opus")


def listen_request(kind: str, method: str, url: bytes, headers: list[tuple[bytes, bytes]],
                   http_version: str, client: str | None = None) -> ListenRequest | None:
    """The listener request this is (``kind`` "ws" or "ogg"), or None for ASGI's routes."""
    if method != "GET":
        return None
    parsed = httptools.parse_url(url)
    path = urllib.parse.unquote(parsed.path.decode("latin-1"))
    match = (WS_PATH if kind == "ws" else OGG_PATH).fullmatch(path)
    if match is None:
        return None
    query = (parsed.query or b"").decode("latin-1")
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    return ListenRequest(kind, match.group(1), params, headers, url, http_version, client)


@functools.lru_cache(maxsize=8)
def _trusted(allowed: str) -> _TrustedHosts:
    return _TrustedHosts(allowed)


def client_address(peer: str | None, headers: list[tuple[bytes, bytes]],
                   proxy_headers: bool, forwarded_allow_ips: list[str] | str | None
                   ) -> str | None:
    """The client's address as uvicorn's proxy-headers middleware would put it in the
    ASGI scope: the peer's, or the one a trusted proxy forwarded (``X-Forwarded-For``)."""
    if peer is None or not proxy_headers or not forwarded_allow_ips:
        return peer
    allowed = (forwarded_allow_ips if isinstance(forwarded_allow_ips, str)
               else ",".join(forwarded_allow_ips))
    trusted = _trusted(allowed)
    if peer not in trusted:
        return peer
    forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
    if not forwarded:
        return peer
    host, _ = trusted.get_trusted_client_address(b", ".join(forwarded).decode("latin-1"))
    return host or peer


class _CloseLingers:
    """The transport as a request's cycle sees it: ``close()`` while the request body is
    still coming lingers (GuardedHttpProtocol.linger) instead of resetting the client."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        if self._protocol.request_done:
            self._transport.close()
        else:
            self._protocol.linger()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a per-process connection cap and
    lingering close (see the module's docstring). ``http_protocol`` sets the class
    attributes."""

    cap: ConnectionCap
    header_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted = False
        self.request_done = True
        self.head_timer: asyncio.TimerHandle | None = None
        self.lingering: asyncio.TimerHandle | None = None
        self.drained = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection against the cap; past it, answer 503 and linger-close."""
        super().connection_made(transport)
        if not self.cap.take():
            metrics.HTTP_CLOSES.labels("over-cap").inc()
            transport.write(problem_response(Unavailable(
                "this server has as many connections open as it takes; retry later",
                slug="too-many-connections", retry_after=CONNECTIONS_RETRY_S)))
            self.linger()
            return
        self.counted = True
        self._time_head()

    def _time_head(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self.head_timer = None
        if self.lingering is None and not self.transport.is_closing():
            metrics.HTTP_CLOSES.labels("header-timeout").inc()
            self.transport.abort()

    def _leave(self) -> None:
        """This connection stops counting (closed, or handed to another protocol)."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.counted:
            self.counted = False
            self.cap.release()

    def connection_lost(self, exc: Exception | None) -> None:
        """Give back the connection's place under the cap and stop lingering."""
        self._leave()
        if self.lingering is not None:
            self.lingering.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A new request on the connection: the head must come within the bound again."""
        super().on_message_begin()
        self.request_done = False
        self._time_head()   # a kept-alive connection's next request: the bound again

    def on_headers_complete(self) -> None:
        """The head arrived in time: stop its timer; an early answer will linger-close."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _CloseLingers(self.transport, self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        """The request's body has been read to its end."""
        self.request_done = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """After an answer sent before the body was read, linger rather than reset."""
        queued = bool(self.pipeline)  # a pipelined request waits: its body comes next
        super().on_response_complete()
        if self.lingering is not None:
            self._unset_keepalive_if_required()  # super() armed it; the linger bounds us
        elif not self.request_done and not queued:
            # answered before its body was read: do not keep reading an unbounded body
            self.linger()

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket upgrade leaves the cap for non-listener connections."""
        self._leave()
        super().handle_websocket_upgrade()

    def linger(self) -> None:
        """Close after an early answer without resetting a client that is still sending:
        our side is half-closed once the answer is out, and what the client sends is read
        and dropped until it closes, for at most LINGER_S / LINGER_BYTES (like nginx's
        lingering close)."""
        transport = self.transport
        if self.lingering is not None or transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.lingering = self.loop.call_later(LINGER_S, self._end_linger)
        self.flow.resume_reading()  # uvicorn pauses reading while a body piles up
        if transport.can_write_eof():
            transport.write_eof()

    def _end_linger(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """While lingering, read and drop what the client still sends (bounded); else parse it."""
        if self.lingering is not None:
            self.drained += len(data)
            if self.drained > LINGER_BYTES:
                self._end_linger()
            return
        super().data_received(data)


class ListenerHttpProtocol(GuardedHttpProtocol):
    """uvicorn's httptools protocol, with listener requests handed to the edge."""

    edge: EdgeNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listen: ListenRequest | None = None

    def _client(self) -> str | None:
        return client_address(self.client[0] if self.client else None, self.headers,
                              self.config.proxy_headers, self.config.forwarded_allow_ips)

    def _idle(self) -> bool:
        # No request of this connection still in the ASGI app (pipelining): only then
        # may the socket change hands.
        return self.cycle is None or self.cycle.response_complete

    def on_headers_complete(self) -> None:
        """A ``GET /listen/<space>.opus``, when no earlier request is still in the app, becomes an
        Ogg listener; anything else goes on to ASGI."""
        if self.listen is not None:
            return  # bytes pipelined after a listener request: ignored
        if not self.parser.should_upgrade() and self._idle():
            version = self.parser.get_http_version()
            self.listen = listen_request("ogg", self.parser.get_method().decode("ascii"),
                                         self.url, self.headers, version, self._client())
            if self.listen is not None:
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """A listener request's body is ignored; any other's goes to ASGI."""
        if self.listen is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """Only a request that stays with ASGI completes there."""
        if self.listen is None:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        """Parse, then hand the transport to the Ogg listener once its request is complete."""
        super().data_received(data)
        if self.listen is not None and self.parser is not None and self.lingering is None:
            self._hand_over(OggListener(self.edge, self.listen, self.transport,
                                        self.connections))

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket upgrade of ``/ws/<space>``, when no earlier request is still in the app,
        goes to a WsListener; anything else to uvicorn's own WebSocket handling."""
        request = None
        if self._idle():
            request = listen_request("ws", self.scope["method"], self.url, self.headers,
                                     self.parser.get_http_version(), self._client())
        if request is None:
            super().handle_websocket_upgrade()
            return
        self._hand_over(WsListener(self.edge, request, self.transport, self.connections))

    def _hand_over(self, listener: ListenerConnection) -> None:
        self._leave()  # a listener now: the edge's capacity and per-address cap count it
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        self.transport.set_protocol(listener)
        self.parser = None  # type: ignore[assignment]  # this protocol is done
        listener.begin()


def http_protocol(edge: EdgeNode | None, *, max_connections: int | None = None,
                  header_timeout_s: float | None = None) -> type[HttpToolsProtocol]:
    """What serve.py passes as uvicorn's ``Config(http=...)`` for a process with (or
    without) the edge role: limits from the arguments, else the environment
    (TOWNHALL_MAX_CONNECTIONS, TOWNHALL_HEADER_TIMEOUT_S)."""
    attrs: dict[str, Any] = {
        "cap": ConnectionCap(max_connections or max_connections_from_env()),
        "header_timeout_s": header_timeout_s or header_timeout_from_env()}
    if edge is None:
        return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attrs)
    return type("EdgeHttpProtocol", (ListenerHttpProtocol,), {"edge": edge, **attrs})
