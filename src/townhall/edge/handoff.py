"""Hands listener connections from uvicorn's HTTP protocol to the edge's raw protocols.

uvicorn (pinned) takes a protocol class as ``Config(http=...)``. This subclass of its
``HttpToolsProtocol`` looks at each request once its headers are parsed: a WebSocket
upgrade of ``GET /ws/<space>`` and a plain ``GET /listen/<space>.opus`` leave ASGI — the
transport is given to a ``WsListener`` / ``OggListener`` (``transport.set_protocol``) —
and everything else goes on to the ASGI app exactly as before. The listener protocols join
uvicorn's connection set, so a graceful shutdown calls their ``shutdown()`` too (1001 /
the end of the Ogg stream) and waits for them.

What we rely on in uvicorn: ``on_headers_complete``/``on_body``/``on_message_complete``/
``handle_websocket_upgrade`` as the parser's hooks, ``self.url``, ``self.headers``,
``self.scope["method"]``, ``self.cycle``, ``self.connections`` and
``_unset_keepalive_if_required``. tests/unit/test_edge_handoff.py runs it against the
installed uvicorn.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from townhall.edge.listeners import ListenerConnection, ListenRequest, OggListener, WsListener
from townhall.edge.node import EdgeNode

# Space ids are [a-z0-9]{10} (room.rules); anything far from that (NATS wildcards, dots)
# never reaches the bus: the ASGI app answers it (404).
WS_PATH = re.compile(r"/ws/([A-Za-z0-9_-]{1,64})")
OGG_PATH = re.compile(r"/listen/([A-Za-z0-9_-]{1,64})\.opus")


def listen_request(kind: str, method: str, url: bytes, headers: list[tuple[bytes, bytes]],
                   http_version: str) -> ListenRequest | None:
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
    return ListenRequest(kind, match.group(1), params, headers, url, http_version)


class ListenerHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with listener requests handed to the edge."""

    edge: EdgeNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listen: ListenRequest | None = None

    def _idle(self) -> bool:
        # No request of this connection still in the ASGI app (pipelining): only then
        # may the socket change hands.
        return self.cycle is None or self.cycle.response_complete

    def on_headers_complete(self) -> None:
        if self.listen is not None:
            return  # bytes pipelined after a listener request: ignored
        if not self.parser.should_upgrade() and self._idle():
            version = self.parser.get_http_version()
            self.listen = listen_request("ogg", self.parser.get_method().decode("ascii"),
                                         self.url, self.headers, version)
            if self.listen is not None:
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.listen is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.listen is None:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.listen is not None and self.parser is not None:
            self._hand_over(OggListener(self.edge, self.listen, self.transport,
                                        self.connections))

    def handle_websocket_upgrade(self) -> None:
        request = None
        if self._idle():
            request = listen_request("ws", self.scope["method"], self.url, self.headers,
                                     self.parser.get_http_version())
        if request is None:
            super().handle_websocket_upgrade()
            return
        self._hand_over(WsListener(self.edge, request, self.transport, self.connections))

    def _hand_over(self, listener: ListenerConnection) -> None:
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        self.transport.set_protocol(listener)
        self.parser = None  # type: ignore[assignment]  # this protocol is done
        listener.begin()


def http_protocol(edge: EdgeNode | None) -> type[HttpToolsProtocol] | str:
    """What serve.py passes as uvicorn's ``Config(http=...)`` for a process with (or
    without) the edge role."""
    if edge is None:
        return "httptools"
    return type("EdgeHttpProtocol", (ListenerHttpProtocol,), {"edge": edge})
