"""The fan-out: the one module that sends listeners' bytes to their sockets.

A listener's ``Outlet`` is its transport's ``write`` and, where allowed, a socket object on
the transport's own descriptor. A fast set sends a chunk to many listeners at once with
``socket.send`` called by ``map`` (one ``send(2)`` per listener, no Python bytecode per
listener; see townhall.edge.hub's docstring and docs/edge.md for what that saves). A short
or refused send hands the rest to the listener's transport, which buffers it and pauses
the listener. Everything else a listener is owed (its backlog, its own text frames) is
computed by its Subscriber and sent here through ``Outlet.send``.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from itertools import islice, repeat

from townhall.edge import metrics
from townhall.edge.subscriber import Subscriber, Write

SEND = socket.socket.send   # called by map() over a fast set's sockets
REFUSED = -1                # what a send that raised (not EAGAIN) counts as


def count_deliveries(kind: str, written: int, queued: int) -> None:
    """Add one fan-out's counts per kind to the metrics (not per listener)."""
    if written:
        metrics.DELIVERIES.labels(kind, "direct").inc(written)
    if queued:
        metrics.DELIVERIES.labels(kind, "queued").inc(queued)


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


class Outlet:
    """Where one listener's bytes go: its transport's ``write`` and, for the fast set's
    direct sends, the socket on its descriptor (None: ``write`` only). Whoever makes one
    keeps the transport's high-water mark at 0 (so a fast listener's transport holds
    nothing and bytes stay in order) and calls ``release`` before the transport closes
    the descriptor."""

    __slots__ = ("sock", "write")

    def __init__(self, write: Write, sock: socket.socket | None = None) -> None:
        self.write = write
        self.sock = sock

    @classmethod
    def of(cls, transport: asyncio.WriteTransport) -> Outlet:
        """The outlet of an asyncio transport (direct sends where direct_socket allows)."""
        return cls(transport.write, direct_socket(transport))

    def send(self, sub: Subscriber, data: bytes) -> None:
        """``data`` (what ``sub`` returned) through the transport; one already closed
        pauses the listener, which is on its way out."""
        if not data:
            return
        try:
            self.write(data)
        except Exception:
            sub.pause()

    def release(self) -> None:
        """Let go of the descriptor without closing it (the transport closes it)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.detach()


@dataclass(slots=True)
class FastSet:
    """One kind's fast set as flat lists, rebuilt only when the set changes (a loop over
    one is then safe from listeners moving, and allocates nothing per listener)."""

    socks: list[socket.socket] = field(default_factory=list)
    senders: list[Subscriber] = field(default_factory=list)    # in the order of socks
    rests: list[Write] = field(default_factory=list)          # their transports' writes
    writers: list[tuple[Subscriber, Write]] = field(default_factory=list)  # no socket

    def __len__(self) -> int:
        return len(self.socks) + len(self.writers)

    def add(self, sub: Subscriber, outlet: Outlet) -> None:
        """One more listener keeping up, sent to directly if its outlet has a socket."""
        if outlet.sock is not None:
            self.socks.append(outlet.sock)
            self.senders.append(sub)
            self.rests.append(outlet.write)
        else:
            self.writers.append((sub, outlet.write))

    def send(self, data: bytes) -> None:
        """``data`` to every listener in the set; one that cannot take it all now leaves
        the set (its transport buffers the rest and pauses it)."""
        for sub, write in self.writers:
            try:
                write(data)
            except Exception:  # its transport is already closed: it is on its way out
                sub.pause()
        socks = self.socks
        if not socks:
            return
        sent: list[int] = []
        while True:
            try:
                sent.extend(map(SEND, islice(socks, len(sent), None) if sent else socks,
                                repeat(data)))
                break
            except BlockingIOError:  # its socket buffer is full: all of it to the transport
                sent.append(0)
            except OSError:          # reset, or closed under us: it is on its way out
                sent.append(REFUSED)
        size = len(data)
        if sent.count(size) == len(sent):
            return
        for sub, write, done in zip(self.senders, self.rests, sent, strict=True):
            if done == size:
                continue
            if done == REFUSED:
                sub.pause()
                continue
            try:
                write(memoryview(data)[done:])
            except Exception:
                sub.pause()
