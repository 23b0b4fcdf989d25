"""``GET /ws/<space>`` as a raw asyncio protocol: the WebSocket listener (docs/protocol.md).

The handshake and client frames are handled by ``websockets``' Sans-I/O ``ServerProtocol``;
server frames are the shared prebuilt bytes of the fan-out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import MutableSet
from typing import Any

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from townhall.closecode import CloseCode
from townhall.edge.admission import TokenBucket
from townhall.edge.connection import ListenerConnection, ListenRequest
from townhall.edge.feed import Joined
from townhall.edge.gate import EdgeNode, Refusal, parse_from
from townhall.edge.wire import problem_response, ws_text_frame
from townhall.problems import BadInput
from townhall.room.snapshot import REACTIONS

log = logging.getLogger(__name__)
# websockets logs every connection open/close at INFO: not per listener here.
ws_log = logging.getLogger(__name__ + ".websockets")
ws_log.setLevel(logging.WARNING)

MAX_CLIENT_TEXT = 1024       # bytes; anything larger closes that listener (1009)
CLIENT_RATE = 5.0            # client messages (text and PING) per second, bursting to
CLIENT_BURST = 20.0          # CLIENT_BURST; past that the listener is closed (1008)
# Bytes of our own protocol frames (pongs, the close) written while the client was not
# reading, above which it is closed (1008): a pong flood must not pile up in our buffers.
MAX_OWED = 16 * 1024


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
        """Check ``from`` and run the WebSocket handshake; the 101 waits to go out with hello."""
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
        """The held 101 and the hello frame, as one piece."""
        head, self.head = self.head, b""
        return head + ws_text_frame(json.dumps({
            "type": "hello", "space": self.request.space, "live_seq": joined.live_seq,
            "from": joined.start, "resumed": joined.resumed}))

    def refuse(self, refusal: Refusal) -> None:
        """Close with the refusal's 44xx code."""
        self.finish(refusal.code, refusal.detail)

    def full(self, retry_after: int) -> None:
        """Close 4503 with the retry delay."""
        self.finish(CloseCode.FULL, json.dumps({"retry_after": retry_after}))

    def too_many(self, retry_after: int) -> None:
        """Close 4429: this address holds as many listener connections as it may."""
        log.info("listener refused: %s holds %d listener connections", self.request.client,
                 self.edge.per_address.limit)
        self.finish(CloseCode.TOO_MANY, json.dumps({"retry_after": retry_after}))

    def finish(self, code: int, reason: str) -> None:
        """Send what text is queued, then the close frame; bound the wait for the peer."""
        if self.closing:
            return
        self.closing = True
        sub = self.sub
        if sub is not None:
            sub.end(code, reason)
        if not self.transport.is_closing() and self.ws.state is State.OPEN:
            texts = sub.take_texts() if sub is not None else b""
            if texts:  # e.g. the final "ended" state, ahead of the close frame
                self.transport.write(texts)
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
        """The transport drained: nothing owed any more, the backlog out."""
        self.owed = 0
        super().resume_writing()

    def _metered(self) -> bool:
        """Spend one of the client's message tokens (text frames and pings alike)."""
        now = time.monotonic()
        if self.bucket is None:
            self.bucket = TokenBucket(CLIENT_RATE, CLIENT_BURST, now)
        return self.bucket.take(now)

    def data_received(self, data: bytes) -> None:
        """Client frames: react and ping (metered), pings, the close; anything else closes."""
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
        elif body.get("type") == "ping" and self.sub is not None and self.sub.feed is not None:
            self.sub.feed.text(self.sub, '{"type": "pong"}')
