"""What both kinds of listener connection share, once the HTTP protocol has handed the
socket over (edge/handoff.py): the join, flow control, leaving, shutdown. The connection
writes only its own protocol's bytes (handshake, refusals, the close); the stream goes
through the ``Outlet`` it hands the fan-out.

No ASGI task, no per-connection reader/writer tasks and no queues: a listener is one
protocol object and one Subscriber, written to by the feed's fan-out loop. Flow control is
the transport's own: a high-water mark of 0 makes ``pause_writing`` take the listener out
of the fast set as soon as the transport holds a byte, and ``resume_writing`` brings it
back once it holds none (edge/subscriber.py). While it is fast, the fan-out sends to the
listener's socket directly (edge/fanout.py): a socket object on the transport's own
descriptor, released (``Outlet.release``) in ``connection_lost`` — which the event loop
calls before it closes the descriptor — so the descriptor is never sent to once it could
be another's. The two
protocols are edge/websocket.py (``/ws/<space>``) and edge/ogghttp.py
(``/listen/<space>.opus``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableSet
from dataclasses import dataclass
from typing import Any

from townhall.edge.fanout import Outlet
from townhall.edge.feed import Joined
from townhall.edge.gate import EdgeNode, Refusal, may_listen_as, may_react, parse_from, verified
from townhall.edge.guard import counted
from townhall.edge.subscriber import Subscriber

log = logging.getLogger(__name__)

# Bytes waiting in our transport buffer above which a listener leaves the fast set, and at
# or below which it returns: 0, so a fast listener's transport holds nothing and the
# fan-out may send to its socket directly. What a slow reader is owed waits in its bounded
# backlog (edge/subscriber.py), on top of what the kernel buffers.
HIGH_WATER = 0
LOW_WATER = 0
CLOSE_TIMEOUT_S = 2.0        # for the client's side of the close (or the last bytes)
SHUTDOWN = (1001, "edge shutting down")


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
        self.outlet: Outlet | None = None   # where the fan-out sends its bytes, once joined
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
        self.outlet = Outlet.of(self.transport)
        if sub.feed is not None:
            sub.feed.open(sub, self.outlet, self.start_stream(joined))
        if sub.close is not None:  # e.g. the Space ended while it joined
            self._on_end()

    def _joined(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("listener join failed", exc_info=task.exception())
            self.transport.abort()

    def stream_kind(self) -> str:
        """The wire form this listener's Subscriber takes (townhall.edge.frame.KINDS)."""
        return self.kind

    def start_stream(self, joined: Joined) -> bytes:
        """What precedes the chunks (hello frame; response head and Ogg headers)."""
        raise NotImplementedError

    def refuse(self, refusal: Refusal) -> None:
        """Refuse the join: it may not listen to this Space."""
        raise NotImplementedError

    def full(self, retry_after: int) -> None:
        """Refuse the join: this edge is full, retry after ``retry_after`` s."""
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
        """The transport holds bytes: out of the fast set (asyncio.Protocol)."""
        self.paused = True
        if self.sub is not None:
            self.sub.pause()

    def resume_writing(self) -> None:
        """The transport drained: the backlog out, back into the fast set."""
        self.paused = False
        if self.sub is not None and self.sub.feed is not None and not self.closing:
            self.sub.feed.resume(self.sub)

    def eof_received(self) -> bool | None:
        """The listener went away: close our side too."""
        return None  # the listener went away: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the feed, free the address's slot and the descriptor."""
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
            self.sub = None
        if self.outlet is not None:
            self.outlet.release()  # the transport closes the descriptor after this returns
            self.outlet = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (SIGTERM): close this listener now."""
        self.finish(*SHUTDOWN)
