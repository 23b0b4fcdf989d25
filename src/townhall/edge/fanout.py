"""The fan-out: the one place that sends a chunk to many listeners' sockets at once.

See townhall.edge.hub's docstring for why a fast listener is sent to with ``socket.send``
called by ``map`` (one ``send(2)`` per listener, no Python bytecode per listener), and
docs/edge.md for what that saves. A short or refused send hands the rest to the
listener's transport, which buffers it and pauses the listener.
"""

from __future__ import annotations

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


@dataclass(slots=True)
class FastSet:
    """One kind's fast set as flat lists, rebuilt only when the set changes (a loop over
    one is then safe from listeners moving, and allocates nothing per listener)."""

    socks: list[socket.socket] = field(default_factory=list)
    senders: list[Subscriber] = field(default_factory=list)    # in the order of socks
    writers: list[tuple[Subscriber, Write]] = field(default_factory=list)  # no socket

    def __len__(self) -> int:
        return len(self.socks) + len(self.writers)

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
        for sub, done in zip(self.senders, sent, strict=True):
            if done == size:
                continue
            if done == REFUSED or sub.write is None:
                sub.pause()
                continue
            try:
                sub.write(memoryview(data)[done:])
            except Exception:
                sub.pause()
