"""Per-Space feeds on one edge: subscribe on demand, encode each chunk once, fan it out.

Fan-out does nothing per listener but write shared bytes: each Feed keeps the listeners
that are keeping up in a "fast set" and writes every chunk to them in one tight loop. A
listener leaves the fast set on an event — its socket pauses writing (the transport's
high-water mark), a text frame of its own is queued, it must be told about a skip, it is
closing — and is then served through its bounded backlog until it has drained
(``resume_writing``), when it rejoins the fast set.

The loop itself: a listener that brought its socket (edge/listeners.py: a socket object on
the transport's file descriptor, with the transport's high-water mark at 0 so that it is
paused whenever the transport holds a byte) is sent to with ``socket.send`` called by
``map`` — one ``send(2)`` per listener and no Python bytecode per listener (docs/edge.md:
about half the user time and a cheaper system call than ``transport.write``). A short or
refused send hands the rest to the transport, which buffers it and pauses the listener;
byte order holds because a fast listener's transport holds nothing. Listeners without a
socket (unit tests' fake transports) get ``write(data)`` in a plain loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import Any

from townhall.bus import Bus, subjects
from townhall.bus.bus import Message, Subscription
from townhall.edge import metrics
from townhall.edge.backlog import Backlog, Offer
from townhall.edge.guard import ReplayBudget, ReplayChoice, replay_rate_from_env
from townhall.edge.pacer import STEPS_S, Pacer
from townhall.edge.resume import Source, plan_resume, stitch
from townhall.edge.ring import Ring
from townhall.edge.wire import http_chunk, ws_binary_frame, ws_text_frame
from townhall.media.chunk import Chunk
from townhall.media.ogg import OggOpusStream
from townhall.problems import BadInput
from townhall.room.snapshot import public_view

log = logging.getLogger(__name__)

GRACE_S = 10.0          # keep a Space's subscriptions this long after its last listener
TICK_S = STEPS_S[0]
BEHIND = 3              # queued chunks from which a listener counts as "behind"
MIN_BEHIND = 10         # fewer listeners behind than this is not edge overload
MAX_TEXTS = 32          # queued text frames per listener; older levels are dropped first
MAX_REPAIR = 100        # refill a hole of up to this many chunks (10 s) from JetStream
REPAIR_LOOKBACK_S = 15.0
REPAIR_TIMEOUT_S = 1.0
DOC_TTL_S = 5.0         # a watched KV entry older than this is read again on the next join
CLOSE_TOO_SLOW = 4408
CLOSE_ENDED = 4410
CLOSE_REMOVED = 4403
KINDS = ("ws", "ogg", "ogg_raw")  # WebSocket; Ogg over chunked HTTP/1.1; Ogg over HTTP/1.0
DUPLICATE, QUEUED, WRITTEN = -1, 0, 1   # what push_frame did with a chunk

Write = Callable[[bytes], Any]
SEND = socket.socket.send   # called by map() over a fast set's sockets
REFUSED = -1                # what a send that raised (not EAGAIN) counts as


@dataclass(frozen=True, slots=True)
class Frame:
    """One chunk in every form a listener may need, built once per edge."""

    seq: int
    ws: bytes            # exactly Chunk.encode() bytes: one binary WebSocket frame
    ogg: bytes           # one Ogg page
    sent_us: int
    ws_wire: bytes = b""   # the whole WebSocket frame (header + ws)
    ogg_wire: bytes = b""  # the Ogg page as one HTTP/1.1 chunked-body piece

    def wire(self, kind: str) -> bytes:
        """The bytes a listener of ``kind`` gets on its socket for this chunk."""
        return self.ws_wire if kind == "ws" else self.ogg_wire if kind == "ogg" else self.ogg


def _wires(frames: list[Frame]) -> dict[str, bytes]:
    return {kind: b"".join(f.wire(kind) for f in frames) for kind in KINDS}


class Subscriber:
    """One listener: written to directly while it keeps up, through a bounded backlog
    (skip, then close with a resume hint) while its socket is paused or text is queued.

    Sans-I/O: the connection hands it ``write`` (its transport's) once the stream may
    start, calls ``pause``/``resume`` from the transport's flow control, and acts on
    ``close`` through ``on_end``."""

    __slots__ = (
        "backlog",
        "close",
        "fast_since",
        "feed",
        "identity",
        "kind",
        "last_seq",
        "on_end",
        "paused",
        "sock",
        "texts",
        "write",
    )

    def __init__(self, kind: str, backlog_limit: int = 20, identity: str | None = None,
                 ) -> None:
        self.kind = kind
        self.identity = identity
        self.backlog: Backlog[Frame] = Backlog(limit=backlog_limit)
        self.texts: deque[str] = deque()
        self.close: tuple[int, str] | None = None
        self.last_seq = -1              # newest chunk queued or written for this listener
        self.write: Write | None = None  # set once the connection is streaming
        # Its socket, for the fast set's direct sends (None: write() only). Whoever hands
        # it over keeps the transport's high-water mark at 0 and takes it back (``sock =
        # None`` after leaving the feed) before the transport closes the descriptor.
        self.sock: socket.socket | None = None
        self.paused = False             # its transport is above its high-water mark
        self.feed: Feed | None = None
        self.on_end: Callable[[], None] | None = None
        self.fast_since = 0             # feed.chunks when it entered the fast set

    def keeping_up(self) -> bool:
        """Nothing queued, nothing to announce, socket accepting: the fast set's rule."""
        return (self.write is not None and not self.paused and not self.texts
                and not len(self.backlog) and self.backlog.pending_skip is None
                and self.close is None)

    def sync(self) -> None:
        """Into or out of the feed's fast set, as ``keeping_up()`` says now."""
        if self.feed is not None:
            self.feed.place(self)

    def preload(self, items: list[tuple[int, Frame]]) -> None:
        """Catch-up chunks for a resuming listener, ahead of the live ones."""
        self.backlog.preload(items)
        if items:
            self.last_seq = max(self.last_seq, items[-1][0])

    def behind(self) -> bool:
        """Chunks queue up for this listener, or its socket stopped accepting writes."""
        return self.paused or len(self.backlog) >= BEHIND

    def streaming(self, write: Write, first: bytes = b"",
                  sock: socket.socket | None = None) -> None:
        """The connection is ready for the stream: write ``first`` (e.g. the response head
        and hello) and what is queued, as one write, then go fast (sent to through
        ``sock`` if given, see the module's docstring)."""
        self.write = write
        self.sock = sock
        self.drain(first)

    def pause(self) -> None:
        """Its transport passed the high-water mark: queue from now on."""
        self.paused = True
        self.sync()

    def resume(self) -> None:
        """Its transport drained below the low-water mark: write the backlog out."""
        self.paused = False
        self.drain()

    def push_frame(self, frame: Frame) -> int:
        """One live chunk while not in the fast set: WRITTEN, QUEUED or DUPLICATE."""
        if frame.seq <= self.last_seq:
            return DUPLICATE  # already queued as catch-up (a join while chunks were held)
        self.last_seq = frame.seq
        self._queue(frame)
        return self.drain()

    def push_frames(self, frames: list[Frame]) -> int:
        """Several live chunks at once (a coalesced flush): how many were written now."""
        self.backlog.allow(len(frames))  # the edge held them, not the reader
        for frame in frames:
            if frame.seq > self.last_seq:
                self.last_seq = frame.seq
                self._queue(frame)
        return self.drain()

    def _queue(self, frame: Frame) -> None:
        outcome = self.backlog.offer(frame.seq, frame)
        if outcome is Offer.SKIPPED:
            metrics.SKIPS.inc()
        elif outcome is Offer.CLOSE and self.close is None:
            metrics.SLOW_CLOSES.inc()
            self.end(CLOSE_TOO_SLOW, json.dumps({"resume_from": self.backlog.resume_from}))

    def push_text(self, text: str) -> bool:
        """Queue a text frame of this listener's own (and write it now if it can)."""
        if self.kind != "ws":
            return False  # state and levels do not travel in Ogg
        if len(self.texts) >= MAX_TEXTS:
            self.texts.popleft()
        self.texts.append(text)
        return bool(self.drain())

    def drain(self, first: bytes = b"") -> int:
        """Unless its socket is paused, write everything queued (oldest first, after
        ``first``) as one write — the backlog is bounded, and the write itself pauses the
        listener if it fills the buffer. Returns WRITTEN if the listener is back in the
        fast set, else QUEUED."""
        write = self.write
        if write is not None and self.close is None:
            try:
                out = [first] if first else []
                if not self.paused:
                    self._take_all(out)
                if out:
                    write(b"".join(out))
            except Exception:  # its transport is already closed: it is on its way out
                self.paused = True
        self.sync()
        return WRITTEN if self.keeping_up() else QUEUED

    def _take_all(self, out: list[bytes]) -> None:
        kind = self.kind
        while True:
            if self.texts:
                out.append(ws_text_frame(self.texts.popleft()))
                continue
            skip = self.backlog.take_skip()
            if skip is not None:
                if kind == "ws":  # for Ogg readers a skip is just a page-number jump
                    out.append(ws_text_frame(json.dumps({
                        "type": "jump", "from": skip.from_seq, "to": skip.to_seq,
                        "reason": "slow"})))
                continue
            item = self.backlog.take()
            if item is None:
                return
            out.append(item[1].wire(kind))

    def end(self, code: int, reason: str) -> None:
        """Decide to close this listener (first reason wins); its connection acts on it."""
        if self.close is None:
            self.close = (code, reason)
            self.sync()
            if self.on_end is not None:
                self.on_end()

    def next_frame(self) -> Frame | None:
        """Take the oldest queued chunk (for a connection that reads the backlog itself)."""
        item = self.backlog.take()
        return item[1] if item else None


def _count(kind: str, written: int, queued: int) -> None:
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
        # subscribers = the fast sets (by kind: listener -> its write; see fast_set) + slow
        self.fast: dict[str, dict[Subscriber, Write]] = {kind: {} for kind in KINDS}
        # Each fast set as lists, rebuilt only when the set changes: the per-chunk loop
        # then allocates nothing per listener (perf: list(items()) was ~4 % of the edge).
        self._sets: dict[str, FastSet] = {}
        self.slow: set[Subscriber] = set()
        self.snapshot: dict[str, Any] | None = None   # public view
        # The Space's KV entry (internal keys kept: private, _blocked), kept fresh while
        # the feed is open by watching the key, so that a join needs no NATS round trip.
        self.doc_raw: bytes | None = None
        self.doc_at: float | None = None   # loop time it was last confirmed; None = never
        self.doc_seen = 0                  # updates received (a re-read must not undo one)
        self._doc: dict[str, Any] | None = None
        self._doc_parsed = True
        self.state_text: str | None = None
        self.reactions: Counter[str] = Counter()
        self.subs: list[Subscription] = []
        self.release: asyncio.TimerHandle | None = None
        self.chunks = 0
        self.coalesce = False           # under load: hold chunks until the next flush
        self.pending: list[Frame] = []
        # A hole in the live sequence (e.g. our NATS node died and the subscription missed
        # chunks while reconnecting) is refilled from JetStream: ``on_gap(first, last)``
        # starts that, later chunks wait in ``held`` until ``repaired`` delivers in order.
        self.on_gap: Callable[[int, int], None] | None = None
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
        if self.fast[sub.kind].pop(sub, None) is not None:
            self._sets.pop(sub.kind, None)
        sub.feed = None

    def fast_set(self, kind: str) -> FastSet:
        """The fast set of ``kind`` as lists (not to be changed: a new one replaces it
        whenever the set changes)."""
        fast = self._sets.get(kind)
        if fast is None:
            fast = self._sets[kind] = FastSet()
            for sub, write in self.fast[kind].items():
                if sub.sock is not None:
                    fast.socks.append(sub.sock)
                    fast.senders.append(sub)
                else:
                    fast.writers.append((sub, write))
        return fast

    def place(self, sub: Subscriber) -> None:
        """Keep ``sub`` in the fast set iff it is keeping up."""
        if sub not in self.subscribers:
            return
        fast = self.fast[sub.kind]
        # A listener that already has (some of) the held chunks takes the next flush
        # through push_frames, which drops what it has.
        if (sub.keeping_up() and sub.write is not None
                and (not self.pending or sub.last_seq < self.pending[0].seq)):
            if sub not in fast:
                self.slow.discard(sub)
                fast[sub] = sub.write
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

    def doc(self) -> dict[str, Any] | None:
        """The Space's KV entry as a dict (None if absent or unreadable)."""
        if not self._doc_parsed:
            self._doc_parsed = True
            self._doc = None
            if self.doc_raw:
                with contextlib.suppress(ValueError):
                    doc = json.loads(self.doc_raw)
                    self._doc = doc if isinstance(doc, dict) else None
        return self._doc

    def frame(self, data: bytes) -> Frame:
        chunk = Chunk.decode(data)
        page = self.ogg.chunk_page(chunk)
        return Frame(chunk.seq, data, page, chunk.sent_us, ws_binary_frame(data),
                     http_chunk(page))

    def on_media(self, data: bytes) -> None:
        try:
            frame = self.frame(data)
        except BadInput:
            log.warning("dropped a malformed chunk on %s", self.space)
            return
        if self.held is not None:
            self.held.append(frame)
            return
        last = self.ring.last_seq
        if (self.on_gap is not None and last is not None
                and last + 1 < frame.seq <= last + 1 + MAX_REPAIR):
            self.held = [frame]
            self.on_gap(last + 1, frame.seq - 1)
            return
        self.deliver(frame)

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
            self._fan_out(pending, _wires(pending))

    def _fan_out(self, frames: list[Frame], wires: dict[str, bytes]) -> None:
        # Both copies first: a listener changing sets mid-loop gets the bytes once.
        slow = list(self.slow)
        for kind, members in self.fast.items():
            if not members:
                continue
            fast = self.fast_set(kind)
            fast.send(wires[kind])
            _count(kind, len(fast), 0)
        if slow:
            tally = dict.fromkeys(KINDS, 0)
            single = len(frames) == 1
            for sub in slow:
                if single:
                    if sub.push_frame(frames[0]) != DUPLICATE:
                        tally[sub.kind] += 1
                else:
                    sub.push_frames(frames)
                    tally[sub.kind] += len(frames)
            for kind, n in tally.items():
                _count(kind, 0, n)

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
                sub.push_text(text)
                queued += 1
        if queued:
            metrics.TEXT_DELIVERIES.labels("queued").inc(queued)

    def on_state(self, snap: dict[str, Any]) -> None:
        if self.snapshot is not None and int(snap.get("version", 0)) <= int(
                self.snapshot.get("version", 0)):
            return
        self.snapshot = public_view(snap)
        self.state_text = json.dumps({"type": "state", "snapshot": self.snapshot})
        self._texts(self.state_text)
        if self.snapshot.get("state") == "ended":
            for sub in list(self.subscribers):
                sub.end(CLOSE_ENDED, "space ended")

    def on_control(self, command: dict[str, Any]) -> None:
        """Kicks close that identity's connections; "ended" closes everyone."""
        if command.get("type") == "kick" and command.get("identity"):
            for sub in list(self.subscribers):
                if sub.identity == command["identity"]:
                    sub.end(CLOSE_REMOVED, "removed from this Space")
        elif command.get("type") == "ended":
            for sub in list(self.subscribers):
                sub.end(CLOSE_ENDED, "space ended")

    def on_levels(self, text: str) -> None:
        self._texts(text)


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class Hub:
    """All Space feeds of one edge process."""

    def __init__(self, bus: Bus, grace_s: float = GRACE_S,
                 interval_floor_s: float = TICK_S,
                 replays: ReplayBudget | None = None) -> None:
        self.bus = bus
        # Replays from JetStream are the dear part of a join (a consumer on the stream, up
        # to 55 s of chunks parsed): budgeted per edge, shared per Space.
        self.replays = replays or ReplayBudget(*replay_rate_from_env(), time.monotonic())
        self.grace_s = grace_s
        self.feeds: dict[str, Feed] = {}
        self.ogg = OggOpusStream()
        self._starting: dict[str, asyncio.Task[Feed]] = {}
        self.pacer = Pacer(floor_s=interval_floor_s)
        self.coalesce = False
        self._tasks: set[asyncio.Future[None]] = set()  # refills of missed chunks
        self._reads: dict[str, asyncio.Future[dict[str, Any] | None]] = {}  # KV reads

    async def pace(self) -> None:
        """Measure loop lag and listeners behind every tick; coalesce chunks while loaded."""
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        metrics.INTERVAL.set(self.pacer.interval_s)
        cpu = time.process_time()
        while True:
            started = loop.time()
            await asyncio.sleep(TICK_S)
            now = loop.time()
            lag = max(0.0, now - started - TICK_S)
            cpu, cpu_before = time.process_time(), cpu
            busy = min(1.0, (cpu - cpu_before) / max(now - started, 1e-3))
            # Only the listeners outside the fast sets can be behind: no per-listener scan.
            behind = sum(1 for f in self.feeds.values() for s in f.slow if s.behind())
            total = self.listeners()
            # A few stuck readers are their own problem (their backlog skips them);
            # many at once means this edge cannot keep up.
            share = behind / total if behind >= MIN_BEHIND else 0.0
            interval = self.pacer.observe(lag, share, busy)
            metrics.INTERVAL.set(interval)
            metrics.LOOP_LAG.set(lag)
            metrics.BUSY.set(self.pacer.busy)
            metrics.BEHIND.set(behind / total if total else 0.0)
            self.coalesce = interval > TICK_S
            if not self.coalesce or now - last_flush >= interval - TICK_S / 2:
                last_flush = now
                for feed in self.feeds.values():
                    feed.flush()
            for feed in self.feeds.values():
                feed.coalesce = self.coalesce

    def listeners(self) -> int:
        return sum(len(f.subscribers) for f in self.feeds.values())

    async def snapshot(self, space: str) -> dict[str, Any] | None:
        """The Space's current snapshot from KV (internal keys kept; callers filter):
        the open feed's watched copy, re-read at most every DOC_TTL_S (a watch can miss
        updates while NATS reconnects), or one KV read when no feed is open."""
        feed = self.feeds.get(space)
        now = asyncio.get_running_loop().time()
        if feed is not None and feed.doc_at is not None and now - feed.doc_at < DOC_TTL_S:
            return feed.doc()
        # A join burst on a Space not open yet: one read for all of them, not one each.
        reading = self._reads.get(space)
        if reading is None:
            reading = self._reads[space] = asyncio.ensure_future(self._read(space))
            reading.add_done_callback(lambda _: self._reads.pop(space, None))
        return await asyncio.shield(reading)

    async def _read(self, space: str) -> dict[str, Any] | None:
        feed = self.feeds.get(space)
        now = asyncio.get_running_loop().time()
        seen = feed.doc_seen if feed is not None else 0
        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space)
        raw = entry.value if entry is not None else None
        if feed is None or self.feeds.get(space) is not feed:
            return _parse(raw)
        if feed.doc_seen == seen:  # no watched update while we read: ours is current
            feed.on_doc(raw, now)
        return feed.doc()

    async def _open(self, space: str) -> Feed:
        feed = Feed(space, self.ogg)
        feed.coalesce = self.coalesce

        async def media(msg: Message) -> None:
            feed.on_media(msg.data)

        async def state(msg: Message) -> None:
            with contextlib.suppress(ValueError):
                snap = json.loads(msg.data)
                if isinstance(snap, dict):
                    feed.on_state(snap)

        async def levels(msg: Message) -> None:
            with contextlib.suppress(ValueError):
                body = json.loads(msg.data)
                if isinstance(body, dict):
                    feed.on_levels(json.dumps({**body, "type": "levels"}))

        async def control(msg: Message) -> None:
            with contextlib.suppress(ValueError):
                body = json.loads(msg.data)
                if isinstance(body, dict):
                    if body.get("type") == "ended":
                        # Send the final "ended" snapshot before closing, if KV has it.
                        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space)
                        snap = _parse(entry.value if entry is not None else None)
                        if snap is not None:
                            feed.on_state(snap)
                    feed.on_control(body)

        async def doc(msg: Message) -> None:
            deleted = msg.headers.get("KV-Operation") in ("DEL", "PURGE")
            feed.on_doc(None if deleted else msg.data, asyncio.get_running_loop().time())

        async def refill(first: int, last: int) -> None:
            found: list[Frame] = []
            try:
                msgs = await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                             since_s=REPAIR_LOOKBACK_S,
                                             timeout=REPAIR_TIMEOUT_S)
                for msg in msgs:
                    with contextlib.suppress(BadInput):
                        frame = feed.frame(msg.data)
                        if first <= frame.seq <= last:
                            found.append(frame)
            except Exception:  # the bus is reconnecting: deliver what we have
                log.warning("could not refill chunks %d-%d of %s", first, last, space)
            finally:
                metrics.REFILLED.inc(len(found))
                feed.repaired(found)

        def on_gap(first: int, last: int) -> None:
            self._tasks.add(task := asyncio.ensure_future(refill(first, last)))
            task.add_done_callback(self._tasks.discard)

        feed.on_gap = on_gap
        feed.subs = [await self.bus.subscribe(subjects.media(space), media),
                     await self.bus.subscribe(subjects.control(space), control),
                     await self.bus.subscribe(subjects.state(space), state),
                     await self.bus.subscribe(subjects.levels(space), levels),
                     # watched before the first read, so no update falls in between
                     await self.bus.subscribe(
                         subjects.kv_key(subjects.SPACES_BUCKET, space), doc)]
        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space)
        if feed.doc_seen == 0:
            feed.on_doc(entry.value if entry is not None else None,
                        asyncio.get_running_loop().time())
        snap = feed.doc()
        if snap is not None:
            feed.on_state(snap)
        return feed

    async def feed(self, space: str) -> Feed:
        """The Space's feed, subscribing if this is its first listener."""
        if space in self.feeds:
            return self.feeds[space]
        task = self._starting.get(space)
        if task is None:
            task = asyncio.ensure_future(self._open(space))
            self._starting[space] = task
        try:
            feed = await asyncio.shield(task)
        finally:
            self._starting.pop(space, None)
        self.feeds.setdefault(space, feed)
        metrics.FEEDS.set(len(self.feeds))
        return self.feeds[space]

    async def join(self, space: str, sub: Subscriber, from_seq: int | None,
                   snap: dict[str, Any] | None = None) -> Joined:
        """Attach a listener, queueing its catch-up chunks (ring or JetStream) first."""
        feed = await self.feed(space)
        if snap is not None:
            feed.on_state(snap)  # the KV copy, in case it is newer than the last message
        if feed.release is not None:
            feed.release.cancel()
            feed.release = None
        plan = plan_resume(from_seq, feed.ring.first_seq, feed.ring.last_seq)
        replayed: list[Frame] = []
        budget_out = False
        if plan.source is Source.REPLAY:
            got = await self._replay(feed, plan.since_s)
            budget_out = got is None
            replayed = got or []
        # No await from here on: nothing can arrive between catch-up and live.
        feed.seed(replayed)
        catchup: list[tuple[int, Frame]] = []
        resumed = False
        start: int | None = None
        if from_seq is not None and plan.source in (Source.RING, Source.REPLAY):
            # Gap-free only: a hole in replay + ring becomes a jump, never a silent gap.
            catchup = stitch(from_seq, [(f.seq, f) for f in replayed],
                             feed.ring.since(from_seq))
            if catchup:
                start = catchup[0][0]
                resumed = start == from_seq
            elif plan.source is Source.RING:  # asked for the very next live chunk
                start, resumed = from_seq, True
        if feed.state_text is not None:
            sub.push_text(feed.state_text)
        if from_seq is not None and not resumed:
            live = feed.ring.last_seq
            sub.push_text(json.dumps({"type": "jump", "from": from_seq,
                                      "to": start if start is not None else
                                      (live + 1 if live is not None else None),
                                      "reason": "busy" if budget_out else "not-held"}))
        sub.preload(catchup)
        if start is not None:
            sub.last_seq = max(sub.last_seq, start - 1)  # nothing older from a flush
        feed.attach(sub)
        metrics.LISTENERS.labels(sub.kind).inc()
        return Joined(feed.ring.last_seq, start, resumed)

    async def _replay(self, feed: Feed, since_s: float) -> list[Frame] | None:
        """The Space's chunks of the last ``since_s`` seconds from JetStream: joined to a
        replay in flight that reaches back far enough, else a new one if the edge's budget
        allows; None when it does not (the join then starts from what the ring holds)."""
        reach = time.time() - since_s
        flight = feed.replaying
        choice = self.replays.choose(time.monotonic(), reach,
                                     flight[0] if flight is not None else None)
        metrics.REPLAYS.labels(choice.value).inc()
        if choice is ReplayChoice.LIVE:
            return None
        if choice is ReplayChoice.SHARE and flight is not None:
            return await asyncio.shield(flight[1])
        task = asyncio.ensure_future(self._fetch(feed, since_s))
        feed.replaying = (reach, task)

        def done(_: asyncio.Future[list[Frame]]) -> None:
            if feed.replaying is not None and feed.replaying[1] is task:
                feed.replaying = None

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _fetch(self, feed: Feed, since_s: float) -> list[Frame]:
        frames: list[Frame] = []
        for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(feed.space),
                                         since_s=since_s):
            with contextlib.suppress(BadInput):
                frames.append(feed.frame(msg.data))
        return frames

    def leave(self, space: str, sub: Subscriber) -> None:
        """Detach a listener; the last one out starts the grace timer."""
        feed = self.feeds.get(space)
        if feed is None or sub not in feed.subscribers:
            return
        feed.detach(sub)
        metrics.LISTENERS.labels(sub.kind).dec()
        if not feed.subscribers and feed.release is None:
            loop = asyncio.get_running_loop()
            feed.release = loop.call_later(self.grace_s,
                                           lambda: asyncio.ensure_future(self._release(feed)))

    async def _release(self, feed: Feed) -> None:
        if feed.subscribers or self.feeds.get(feed.space) is not feed:
            return
        del self.feeds[feed.space]
        metrics.FEEDS.set(len(self.feeds))
        for s in feed.subs:
            await s.unsubscribe()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for feed in list(self.feeds.values()):
            if feed.release is not None:
                feed.release.cancel()
            for sub in list(feed.subscribers):
                sub.end(1001, "edge shutting down")
            for s in feed.subs:
                await s.unsubscribe()
        self.feeds.clear()
