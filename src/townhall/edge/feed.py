"""One Space on one edge: its ring of recent chunks, its latest state, its listeners.

No bus I/O: chunks, state, levels and control messages come in as calls; a hole in the
live sequence comes back from ``on_media`` as a ``Gap`` for the hub to refill from
JetStream. What its listeners are sent goes out through the fan-out (townhall.edge.fanout):
the fast sets for the shared bytes, each listener's ``Outlet`` for what its Subscriber
returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from townhall.bus.bus import Subscription
from townhall.bus.messages import Control, Kick
from townhall.closecode import CloseCode
from townhall.edge import metrics
from townhall.edge.fanout import FastSet, Outlet, count_deliveries
from townhall.edge.frame import KINDS, Frame, wires
from townhall.edge.ring import Ring
from townhall.edge.subscriber import Subscriber
from townhall.edge.wire import http_chunk, ws_binary_frame, ws_text_frame
from townhall.media.chunk import Chunk
from townhall.media.ogg import OggOpusStream
from townhall.problems import BadInput
from townhall.room.snapshot import SnapshotError, Space, decode, public_view

log = logging.getLogger(__name__)

MAX_REPAIR = 100        # refill a hole of up to this many chunks (10 s) from JetStream


@dataclass(frozen=True)
class Gap:
    """Chunks ``first``..``last`` (inclusive) never arrived live."""

    first: int
    last: int


@dataclass(frozen=True)
class Joined:
    """What the hello frame tells a listener."""

    live_seq: int | None
    start: int | None
    resumed: bool


class Feed:
    """One Space on this edge: its subscriptions, ring, latest state and listeners."""

    def __init__(self, space: str, ogg: OggOpusStream) -> None:
        self.space = space
        self.ogg = ogg
        self.ring: Ring[Frame] = Ring()
        self.subscribers: set[Subscriber] = set()
        # subscribers = the fast sets (by kind: listener -> its outlet; see fast_set) + slow
        self.fast: dict[str, dict[Subscriber, Outlet]] = {kind: {} for kind in KINDS}
        # Where each listener whose connection is streaming is sent to (townhall.edge.fanout).
        self.outlets: dict[Subscriber, Outlet] = {}
        # Each fast set as lists, rebuilt only when the set changes: the per-chunk loop
        # then allocates nothing per listener (list(items()) per chunk showed in profiles).
        self._sets: dict[str, FastSet] = {}
        self.slow: set[Subscriber] = set()
        self.snapshot: dict[str, Any] | None = None   # public view
        # The Space's KV entry (internal keys kept: private, _blocked), kept fresh while
        # the feed is open by watching the key, so that a join needs no NATS round trip.
        self.doc_raw: bytes | None = None
        self.doc_at: float | None = None   # loop time it was last confirmed; None = never
        self.doc_seen = 0                  # updates received (a re-read must not undo one)
        self._doc: Space | None = None
        self._doc_parsed = True
        self.state_text: str | None = None
        self.reactions: Counter[str] = Counter()
        self.subs: list[Subscription] = []
        self.release: asyncio.TimerHandle | None = None
        self.chunks = 0
        self.coalesce = False           # under load: hold chunks until the next flush
        self.pending: list[Frame] = []
        # A hole in the live sequence (e.g. our NATS node died and the subscription missed
        # chunks while reconnecting) is refilled from JetStream when ``repairs`` is on:
        # ``on_media`` returns the ``Gap`` for the hub to fetch, later chunks wait in
        # ``held`` until ``repaired`` delivers in order.
        self.repairs = False
        self.held: list[Frame] | None = None
        # The join replay from JetStream in flight, if any: the wall-clock time it reads
        # from, and its result (joins it reaches back far enough for share it).
        self.replaying: tuple[float, asyncio.Future[list[Frame]]] | None = None

    def attach(self, sub: Subscriber) -> None:
        """A listener joins this feed (slow until it is streaming and drained)."""
        sub.feed = self
        self.subscribers.add(sub)
        self.place(sub)

    def detach(self, sub: Subscriber) -> None:
        """A listener leaves this feed."""
        self.subscribers.discard(sub)
        self.slow.discard(sub)
        self.outlets.pop(sub, None)
        if self.fast[sub.kind].pop(sub, None) is not None:
            self._sets.pop(sub.kind, None)
        sub.feed = None

    def open(self, sub: Subscriber, outlet: Outlet, first: bytes = b"") -> None:
        """An attached listener's connection is ready for the stream: ``first`` (its
        response head, hello) and what is queued go out through ``outlet`` as one write,
        then it may go fast."""
        if sub in self.subscribers:
            self.outlets[sub] = outlet
        outlet.send(sub, sub.start(first))

    def resume(self, sub: Subscriber) -> None:
        """Its transport drained: its backlog out, and back into the fast set."""
        self.send(sub, sub.resume())

    def text(self, sub: Subscriber, text: str) -> None:
        """A text frame of one listener's own (e.g. a pong)."""
        self.send(sub, sub.push_text(text))

    def send(self, sub: Subscriber, data: bytes) -> None:
        """What ``sub`` returned, through its outlet (none yet: it was only queued)."""
        if data:
            outlet = self.outlets.get(sub)
            if outlet is not None:
                outlet.send(sub, data)

    def fast_set(self, kind: str) -> FastSet:
        """The fast set of ``kind`` as lists (not to be changed: a new one replaces it
        whenever the set changes)."""
        fast = self._sets.get(kind)
        if fast is None:
            fast = self._sets[kind] = FastSet()
            for sub, outlet in self.fast[kind].items():
                fast.add(sub, outlet)
        return fast

    def place(self, sub: Subscriber) -> None:
        """Keep ``sub`` in the fast set iff it is keeping up."""
        if sub not in self.subscribers:
            return
        fast = self.fast[sub.kind]
        # A listener that already has (some of) the held chunks takes the next flush
        # through push_frames, which drops what it has.
        outlet = self.outlets.get(sub)
        if (outlet is not None and sub.keeping_up()
                and (not self.pending or sub.last_seq < self.pending[0].seq)):
            if sub not in fast:
                self.slow.discard(sub)
                fast[sub] = outlet
                self._sets.pop(sub.kind, None)
                sub.fast_since = self.chunks
        elif sub in fast or sub not in self.slow:
            if fast.pop(sub, None) is not None:
                self._sets.pop(sub.kind, None)
                # What it got while fast: its backlog's good-order credit, and the newest
                # chunk written (so a held flush is not written twice).
                sub.backlog.delivered(self.chunks - sub.fast_since)
                last = self.pending[0].seq - 1 if self.pending else self.ring.last_seq
                if last is not None:
                    sub.last_seq = max(sub.last_seq, last)
            self.slow.add(sub)

    def on_doc(self, raw: bytes | None, at: float) -> None:
        """The KV entry changed (None: deleted); parsed only when a join asks for it."""
        self.doc_raw, self.doc_at = raw, at
        self.doc_seen += 1
        self._doc_parsed = False

    def doc(self) -> Space | None:
        """The Space's KV entry (None if absent or unreadable)."""
        if not self._doc_parsed:
            self._doc_parsed = True
            self._doc = parse_doc(self.doc_raw)
        return self._doc

    def frame(self, data: bytes) -> Frame:
        """A chunk from the bus in every wire form (BadInput if it is malformed)."""
        chunk = Chunk.decode(data)
        page = self.ogg.chunk_page(chunk)
        return Frame(chunk.seq, data, page, chunk.sent_us, ws_binary_frame(data),
                     http_chunk(page))

    def on_media(self, data: bytes) -> Gap | None:
        """A live chunk from the bus: delivered, or held behind a hole it reveals (the
        returned Gap, to be refilled and handed to ``repaired``)."""
        try:
            frame = self.frame(data)
        except BadInput:
            log.warning("dropped a malformed chunk on %s", self.space)
            return None
        if self.held is not None:
            self.held.append(frame)
            return None
        last = self.ring.last_seq
        if self.repairs and last is not None and last + 1 < frame.seq <= last + 1 + MAX_REPAIR:
            self.held = [frame]
            return Gap(last + 1, frame.seq - 1)
        self.deliver(frame)
        return None

    def seed(self, replayed: list[Frame]) -> None:
        """A join's JetStream replay into a ring that is still empty (the feed has seen no
        live chunk yet), so the first live chunk is checked for a hole after the replay's
        last one and the hole refilled, like any other (a short replay ending at M while
        live is already past M + 1 would otherwise be a silent gap for that listener)."""
        if self.ring.last_seq is not None:
            return
        for frame in sorted(replayed, key=lambda f: f.seq):
            self.ring.add(frame.seq, frame)

    def repaired(self, found: list[Frame]) -> None:
        """The refill is over: deliver what it found and the held chunks, in order."""
        held, self.held = self.held or [], None
        for frame in sorted(found + held, key=lambda f: f.seq):
            self.deliver(frame)  # the ring drops duplicates and anything out of order

    def deliver(self, frame: Frame) -> None:
        """A new chunk into the ring and out to every listener (or held while coalescing)."""
        if not self.ring.add(frame.seq, frame):
            return
        self.chunks += 1
        metrics.CHUNKS.inc()
        if self.coalesce:
            self.pending.append(frame)
            return
        self._fan_out([frame], {"ws": frame.ws_wire, "ogg": frame.ogg_wire,
                                "ogg_raw": frame.ogg})

    def flush(self) -> None:
        """Hand held chunks to every listener: one write of all of them each."""
        pending, self.pending = self.pending, []
        if pending:
            self._fan_out(pending, wires(pending))

    def _fan_out(self, frames: list[Frame], wires: dict[str, bytes]) -> None:
        # Both copies first: a listener changing sets mid-loop gets the bytes once.
        slow = list(self.slow)
        for kind, members in self.fast.items():
            if not members:
                continue
            fast = self.fast_set(kind)
            fast.send(wires[kind])
            count_deliveries(kind, len(fast), 0)
        if slow:
            tally = dict.fromkeys(KINDS, 0)
            single = len(frames) == 1
            for sub in slow:
                if single:
                    out = sub.push_frame(frames[0])
                    if out is None:  # it had this one already
                        continue
                    tally[sub.kind] += 1
                else:
                    out = sub.push_frames(frames)
                    tally[sub.kind] += len(frames)
                if out:
                    self.send(sub, out)
            for kind, n in tally.items():
                count_deliveries(kind, 0, n)

    def _texts(self, text: str) -> None:
        """A shared text frame: one prebuilt frame for the fast WebSocket listeners, the
        text queued for the others."""
        if self.fast["ws"]:
            fast = self.fast_set("ws")
            fast.send(ws_text_frame(text))
            metrics.TEXT_DELIVERIES.labels("direct").inc(len(fast))
        queued = 0
        for sub in list(self.slow):
            if sub.kind == "ws":
                self.send(sub, sub.push_text(text))
                queued += 1
        if queued:
            metrics.TEXT_DELIVERIES.labels("queued").inc(queued)

    def on_state(self, snap: Space) -> None:
        """A newer snapshot: to every WebSocket listener; an ended Space closes them all."""
        if self.snapshot is not None and snap.version <= int(self.snapshot["version"]):
            return
        self.snapshot = public_view(snap)
        self.state_text = json.dumps({"type": "state", "snapshot": self.snapshot})
        self._texts(self.state_text)
        if self.snapshot.get("state") == "ended":
            for sub in list(self.subscribers):
                sub.end(CloseCode.ENDED, "space ended")

    def on_control(self, command: Control) -> None:
        """A kick closes that identity's connections; the end closes everyone's."""
        if isinstance(command, Kick):
            for sub in list(self.subscribers):
                if sub.identity == command.identity:
                    sub.end(CloseCode.FORBIDDEN, "removed from this Space")
        else:
            for sub in list(self.subscribers):
                sub.end(CloseCode.ENDED, "space ended")

    def on_levels(self, text: str) -> None:
        """The speaking levels frame, to every WebSocket listener."""
        self._texts(text)


def parse_doc(raw: bytes | None) -> Space | None:
    """A KV entry (or a published snapshot) as a Space, or None if absent or unreadable."""
    if not raw:
        return None
    try:
        return decode(raw)
    except SnapshotError:
        return None
