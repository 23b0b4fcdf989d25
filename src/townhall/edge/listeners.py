"""Listener connections as raw asyncio protocols: the WebSocket (``/ws/<space>``) and the
Ogg/Opus stream (``/listen/<space>.opus``), once the HTTP protocol has handed the socket
over (edge/handoff.py).

No ASGI task, no per-connection reader/writer tasks and no queues: a listener is one
protocol object and one Subscriber, written to by the feed's fan-out loop. Flow control is
the transport's own: a high-water mark of 0 makes ``pause_writing`` take the listener out
of the fast set as soon as the transport holds a byte, and ``resume_writing`` brings it
back once it holds none (edge/subscriber.py). While it is fast, the fan-out sends to the
listener's socket directly (edge/fanout.py): a socket object on the transport's own
descriptor, detached in ``connection_lost`` — which the event loop calls before it closes
the descriptor — so the descriptor is never sent to once it could be another's. The WebSocket
handshake and client frames are handled by ``websockets``' Sans-I/O ``ServerProtocol``;
server frames are the shared prebuilt bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import MutableSet
from dataclasses import dataclass
from typing import Any

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from townhall.closecode import CloseCode
from townhall.edge.admission import TokenBucket
from townhall.edge.feed import Joined
from townhall.edge.guard import counted
from townhall.edge.node import (
    EdgeNode,
    Refusal,
    may_listen_as,
    may_react,
    parse_from,
    verified,
)
from townhall.edge.subscriber import Subscriber
from townhall.edge.wire import CHUNKED_END, http_chunk, http_head, problem_response, ws_text_frame
from townhall.problems import (
    BY_STATUS,
    BadInput,
    Problem,
    TooMany,
    Unavailable,
)
from townhall.room.snapshot import REACTIONS

log = logging.getLogger(__name__)
# websockets logs every connection open/close at INFO: not per listener here.
ws_log = logging.getLogger(__name__ + ".websockets")
ws_log.setLevel(logging.WARNING)

# Bytes waiting in our transport buffer above which a listener leaves the fast set, and at
# or below which it returns: 0, so a fast listener's transport holds nothing and the
# fan-out may send to its socket directly. What a slow reader is owed waits in its bounded
# backlog (edge/subscriber.py), on top of what the kernel buffers.
HIGH_WATER = 0
LOW_WATER = 0
MAX_CLIENT_TEXT = 1024       # bytes; anything larger closes that listener (1009)
CLIENT_RATE = 5.0            # client messages (text and PING) per second, bursting to
CLIENT_BURST = 20.0          # CLIENT_BURST; past that the listener is closed (1008)
# Bytes of our own protocol frames (pongs, the close) written while the client was not
# reading, above which it is closed (1008): a pong flood must not pile up in our buffers.
MAX_OWED = 16 * 1024
CLOSE_TIMEOUT_S = 2.0        # for the client's side of the close (or the last bytes)
SHUTDOWN = (1001, "edge shutting down")


def direct_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """A socket object on the transport's descriptor (not a copy: a second descriptor
    per listener would halve how many fit under the open-files limit), for the
    fan-out's direct sends; None where the transport has no socket, and None on a TLS
    transport: bytes sent there would bypass the encryption (plaintext on an encrypted
    connection), so such a listener is written through ``transport.write`` only."""
    if transport.get_extra_info("sslcontext") is not None or \
            transport.get_extra_info("ssl_object") is not None:
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    try:
        sock = socket.socket(fileno=raw.fileno())
    except OSError:
        return None
    try:
        sock.setblocking(False)
    except OSError:
        sock.detach()  # dropped undetached, it would close the transport's descriptor
        return None
    return sock


@dataclass(frozen=True)
class ListenRequest:
    """A listener's request line and headers, as the HTTP protocol parsed them."""

    kind: str                       # "ws" or "ogg"
    space: str
    query: dict[str, str]
    headers: list[tuple[bytes, bytes]]
    target: bytes                   # the request target as sent (path and query)
    http_version: str = "1.1"
    client: str | None = None       # its address (or a trusted proxy's forwarded one)


class ListenerConnection(asyncio.Protocol):
    """What both listener kinds share: join, flow control, leaving, shutdown."""

    kind = ""

    def __init__(self, edge: EdgeNode, request: ListenRequest, transport: asyncio.Transport,
                 connections: MutableSet[Any]) -> None:
        self.edge = edge
        self.request = request
        self.transport = transport
        self.connections = connections   # uvicorn's: shutdown() is called on each
        self.sub: Subscriber | None = None
        self.paused = False
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.may_react = False          # set when it joins (townhall.grants "react")
        self.closer: asyncio.TimerHandle | None = None
        self.address: str | None = None   # counted against the edge's per-address cap

    def begin(self) -> None:
        """The socket is ours now (the HTTP protocol called ``set_protocol``)."""
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.connections.add(self)
        if not self.opened():
            return
        address = self.request.client
        if address is not None and counted(address):
            # Counted for the whole connection, handshake included: sockets that never
            # read cannot fill the edge from one address.
            if not self.edge.hold(address):
                self.too_many(self.edge.per_address_retry_s)
                return
            self.address = address
        self.task = asyncio.ensure_future(self._join())
        self.task.add_done_callback(self._joined)

    def opened(self) -> bool:
        """Checks that need no I/O; False = already answered and closing."""
        return True

    async def _join(self) -> None:
        req, edge = self.request, self.edge
        from_seq = parse_from(req.query.get("from")) if self.kind == "ws" else None
        snap = await edge.hub.snapshot(req.space)
        who = verified(req.query.get("token"), edge.issuer)  # once per join: HS256 costs
        refusal = may_listen_as(snap, req.space, who)
        if refusal is not None:
            self.refuse(refusal)
            return
        decision = edge.admit()
        if not decision.admitted:
            self.full(decision.retry_after)
            return
        self.may_react = may_react(snap, who)
        sub = Subscriber(self.stream_kind(), identity=who.id if who is not None else None)
        try:
            joined = await edge.hub.join(req.space, sub, from_seq, snap)
        finally:
            edge.joined()
        if self.closing or self.transport.is_closing():
            edge.hub.leave(req.space, sub)  # gone while joining
            return
        self.sub = sub
        sub.on_end = self._on_end
        sub.paused = self.paused
        sub.streaming(self.transport.write, self.start_stream(joined), self._socket())
        if sub.close is not None:  # e.g. the Space ended while it joined
            self._on_end()

    def _socket(self) -> socket.socket | None:
        return direct_socket(self.transport)

    def _joined(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("listener join failed", exc_info=task.exception())
            self.transport.abort()

    def stream_kind(self) -> str:
        return self.kind

    def start_stream(self, joined: Joined) -> bytes:
        """What precedes the chunks (hello frame; response head and Ogg headers)."""
        raise NotImplementedError

    def refuse(self, refusal: Refusal) -> None:
        raise NotImplementedError

    def full(self, retry_after: int) -> None:
        raise NotImplementedError

    def too_many(self, retry_after: int) -> None:
        """Refuse: this client address holds as many listener connections as it may."""
        raise NotImplementedError

    def finish(self, code: int, reason: str) -> None:
        """Close this listener (code and reason matter to WebSocket listeners only)."""
        raise NotImplementedError

    def _on_end(self) -> None:
        if self.sub is not None and self.sub.close is not None:
            self.finish(*self.sub.close)

    def _close_later(self) -> None:
        """Bound how long a close may wait for the peer or a full socket buffer."""
        if self.closer is None:
            self.closer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, self.transport.abort)

    # asyncio.Protocol
    def pause_writing(self) -> None:
        self.paused = True
        if self.sub is not None:
            self.sub.pause()

    def resume_writing(self) -> None:
        self.paused = False
        if self.sub is not None and not self.closing:
            self.sub.resume()

    def eof_received(self) -> bool | None:
        return None  # the listener went away: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.address is not None:
            self.edge.let_go(self.address)
            self.address = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.closer is not None:
            self.closer.cancel()
        if self.sub is not None:
            self.edge.hub.leave(self.request.space, self.sub)
            self.sub.on_end = None
            sock, self.sub.sock = self.sub.sock, None
            if sock is not None:
                sock.detach()  # the transport closes the descriptor after this returns
            self.sub = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (SIGTERM): close this listener now."""
        self.finish(*SHUTDOWN)


class WsListener(ListenerConnection):
    """``GET /ws/<space>``: hello, state, chunks, jumps and levels; react/ping from the
    client; the close codes of docs/protocol.md."""

    kind = "ws"

    def __init__(self, edge: EdgeNode, request: ListenRequest, transport: asyncio.Transport,
                 connections: MutableSet[Any]) -> None:
        super().__init__(edge, request, transport, connections)
        self.ws = ServerProtocol(max_size=MAX_CLIENT_TEXT, logger=ws_log)
        self.head = b""  # the 101, held to go out in one write with hello (or the close)
        self.bucket: TokenBucket | None = None  # made on the first client message
        self.owed = 0   # protocol bytes written since the transport last drained

    def opened(self) -> bool:
        try:
            parse_from(self.request.query.get("from"))
        except ValueError as exc:
            self.transport.write(problem_response(BadInput(str(exc), slug="bad-from")))
            self.transport.close()
            return False
        # The request line and headers again, for websockets to parse and validate
        # (RFC 6455 §4.1: the client sends nothing more before our 101).
        head = [b"GET ", self.request.target, b" HTTP/1.1\r\n"]
        for name, value in self.request.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        self.ws.receive_data(b"".join(head))
        events = self.ws.events_received()
        request = events[0] if events and isinstance(events[0], Request) else None
        if request is None:
            self.transport.close()
            return False
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code != 101:
            self._send_protocol_data()
            return False
        self.head = b"".join(self.ws.data_to_send())
        return True

    def start_stream(self, joined: Joined) -> bytes:
        head, self.head = self.head, b""
        return head + ws_text_frame(json.dumps({
            "type": "hello", "space": self.request.space, "live_seq": joined.live_seq,
            "from": joined.start, "resumed": joined.resumed}))

    def refuse(self, refusal: Refusal) -> None:
        self.finish(refusal.code, refusal.detail)

    def full(self, retry_after: int) -> None:
        self.finish(CloseCode.FULL, json.dumps({"retry_after": retry_after}))

    def too_many(self, retry_after: int) -> None:
        log.info("listener refused: %s holds %d listener connections", self.request.client,
                 self.edge.per_address.limit)
        self.finish(CloseCode.TOO_MANY, json.dumps({"retry_after": retry_after}))

    def finish(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        sub = self.sub
        if sub is not None:
            sub.end(code, reason)
        if not self.transport.is_closing() and self.ws.state is State.OPEN:
            texts = [ws_text_frame(t) for t in sub.texts] if sub is not None else []
            if sub is not None:
                sub.texts.clear()
            if texts:  # e.g. the final "ended" state, ahead of the close frame
                self.transport.write(b"".join(texts))
            self.ws.send_close(code, reason)
            self._send_protocol_data()
            self._close_later()

    def _send_protocol_data(self) -> None:
        """Write what websockets produced (handshake, pong, close); b"" = end the TCP."""
        pieces = self.ws.data_to_send()
        data = self.head + b"".join(pieces)
        self.head = b""
        if data:
            if self.paused:
                self.owed += len(data)
            self.transport.write(data)
        if b"" in pieces:
            self.transport.close()

    def resume_writing(self) -> None:
        self.owed = 0
        super().resume_writing()

    def _metered(self) -> bool:
        """Spend one of the client's message tokens (text frames and pings alike)."""
        now = time.monotonic()
        if self.bucket is None:
            self.bucket = TokenBucket(CLIENT_RATE, CLIENT_BURST, now)
        return self.bucket.take(now)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if not isinstance(event, WsFrame):
                continue
            if event.opcode is Opcode.PING:
                # websockets queues the pong already; a flood is cut off here
                if not self._metered():
                    self._overrun("too many client messages")
                    return
            elif event.opcode is Opcode.TEXT:
                self._client_text(event.data)
            elif event.opcode is Opcode.BINARY:
                self.finish(1009, "client messages are text of at most 1 KiB")
            elif event.opcode is Opcode.CLOSE:
                self.closing = True  # websockets answers it; no more frames from us
                if self.sub is not None:
                    self.sub.end(1000, "closed by the listener")
        self._send_protocol_data()
        if self.owed > MAX_OWED:
            self._overrun("protocol frames not read")
            return
        if self.ws.parser_exc is not None and not self.closing:
            # too big (1009) or a protocol error: websockets has failed the connection
            self.closing = True
            if self.sub is not None:
                self.sub.end(1009, "client message refused")
            self._close_later()

    def _overrun(self, reason: str) -> None:
        """Close (1008) a client that sends more than its budget or does not read our
        answers; one that goes on while we close is cut off at once."""
        if self.closing:
            self.transport.abort()
            return
        self.ws.events_received()  # whatever else came in this read is not looked at
        self.ws.data_to_send()     # nor answered (its pongs): only the close goes out
        self.finish(1008, reason)
        if self.owed > MAX_OWED:
            self.transport.abort()

    def _client_text(self, data: bytes) -> None:
        if not self._metered():
            self._overrun("too many client messages")
            return
        try:
            body = json.loads(data)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if body.get("type") == "react" and body.get("emoji") in REACTIONS and self.may_react:
            feed = self.edge.hub.feeds.get(self.request.space)
            if feed is not None:
                feed.reactions[str(body["emoji"])] += 1
        elif body.get("type") == "ping" and self.sub is not None:
            self.sub.push_text('{"type": "pong"}')


class OggListener(ListenerConnection):
    """``GET /listen/<space>.opus``: 200 audio/ogg, header pages first, then live pages;
    problem+json refusals (404, 410, 401/403, 503 + Retry-After)."""

    kind = "ogg"

    def stream_kind(self) -> str:
        # HTTP/1.0 has no chunked encoding: the pages go as they are, the close ends it.
        return "ogg" if self.request.http_version == "1.1" else "ogg_raw"

    def start_stream(self, joined: Joined) -> bytes:
        chunked = self.stream_kind() == "ogg"
        headers = {"content-type": "audio/ogg", "cache-control": "no-store",
                   "x-content-type-options": "nosniff"}
        if chunked:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["connection"] = "close"
        ogg_headers = self.edge.hub.ogg.headers
        return (http_head(200, headers, self.request.http_version)
                + (http_chunk(ogg_headers) if chunked else ogg_headers))

    def _answer(self, problem: Problem) -> None:
        self.closing = True
        self.transport.write(problem_response(problem, self.request.http_version))
        self.transport.close()

    def refuse(self, refusal: Refusal) -> None:
        self._answer(BY_STATUS[refusal.status](refusal.detail, slug=refusal.slug))

    def full(self, retry_after: int) -> None:
        self._answer(Unavailable("this edge is full; retry later", slug="edge-full",
                                 retry_after=retry_after))

    def too_many(self, retry_after: int) -> None:
        self._answer(TooMany("this address holds as many listener connections as an "
                             "edge allows; retry later", slug="too-many-listeners",
                             retry_after=retry_after))

    def finish(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if self.sub is not None:
            self.sub.end(code, reason)
            if self.sub.kind == "ogg" and not self.transport.is_closing():
                self.transport.write(CHUNKED_END)
        self.transport.close()
        self._close_later()

    def data_received(self, data: bytes) -> None:
        pass  # nothing more is expected from a listener on this connection
