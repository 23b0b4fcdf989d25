"""Per-Space feeds on one edge: subscribe on demand, encode each chunk once, fan it out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from townhall.bus import Bus, subjects
from townhall.bus.bus import Message, Subscription
from townhall.edge import metrics
from townhall.edge.backlog import Backlog, Offer, Skip
from townhall.edge.direct import DirectWriter, http_chunk, ws_binary_frame, ws_text_frame
from townhall.edge.pacer import STEPS_S, Pacer
from townhall.edge.resume import Source, plan_resume, stitch
from townhall.edge.ring import Ring
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
CLOSE_TOO_SLOW = 4408
CLOSE_ENDED = 4410
CLOSE_REMOVED = 4403
DUPLICATE, QUEUED, DIRECT = -1, 0, 1   # what push_frame did with a chunk


@dataclass(frozen=True)
class Frame:
    """One chunk in every form a listener may need, built once per edge."""

    seq: int
    ws: bytes            # exactly Chunk.encode() bytes: one binary WebSocket frame
    ogg: bytes           # one Ogg page
    sent_us: int
    ws_wire: bytes = b""   # the whole WebSocket frame (header + ws), for direct writes
    ogg_wire: bytes = b""  # the Ogg page as one HTTP/1.1 chunked-body piece


class Subscriber:
    """One listener's queue: chunks through a bounded backlog, text frames alongside."""

    def __init__(self, kind: str, backlog_limit: int = 20, identity: str | None = None) -> None:
        self.kind = kind
        self.identity = identity
        self.backlog: Backlog[Frame] = Backlog(limit=backlog_limit)
        self.texts: deque[str] = deque()
        self.wake = asyncio.Event()
        self.close: tuple[int, str] | None = None
        self.closed = asyncio.Event()   # set once close is decided
        self.last_seq = -1              # newest chunk queued for this listener
        self.direct: DirectWriter | None = None  # set once the connection is streaming
        self.busy = False               # its writer task is mid-send (keep byte order)

    def preload(self, items: list[tuple[int, Frame]]) -> None:
        """Catch-up chunks for a resuming listener, ahead of the live ones."""
        self.backlog.preload(items)
        if items:
            self.last_seq = max(self.last_seq, items[-1][0])

    def behind(self) -> bool:
        """Chunks queue up for this listener, or its socket buffer is backing up."""
        return len(self.backlog) >= BEHIND or (
            self.direct is not None and self.direct.backing_up())

    def _may_write_directly(self) -> bool:
        # Only when nothing is queued or in flight on the ASGI path: a direct write must
        # never overtake earlier bytes on this connection.
        return (self.direct is not None and not self.busy and not self.texts
                and not len(self.backlog) and self.backlog.pending_skip is None
                and self.close is None)

    def push_frame(self, frame: Frame) -> int:
        """Hand over one live chunk: DIRECT, QUEUED, or DUPLICATE (already had it)."""
        if frame.seq <= self.last_seq:
            return DUPLICATE  # already queued as catch-up (a join while chunks were held)
        self.last_seq = frame.seq
        if self._may_write_directly() and self.direct is not None and self.direct.write(
                frame.ws_wire if self.kind == "ws" else frame.ogg_wire):
            self.backlog.delivered()
            return DIRECT  # the fast path: no queue, no wake-up
        self._queue(frame)
        return QUEUED

    def push_frames(self, frames: list[Frame], wire: bytes) -> tuple[int, int]:
        """Several live chunks at once (a coalesced flush); ``wire`` is their joined wire
        bytes for this listener's kind. Returns (direct, queued) counts."""
        if (frames and frames[0].seq > self.last_seq and self._may_write_directly()
                and self.direct is not None and self.direct.write(wire)):
            self.last_seq = frames[-1].seq
            self.backlog.delivered(len(frames))
            return len(frames), 0
        direct = queued = 0
        for frame in frames:
            path = self.push_frame(frame)
            direct += path == DIRECT
            queued += path == QUEUED
        return direct, queued

    def _queue(self, frame: Frame) -> None:
        outcome = self.backlog.offer(frame.seq, frame)
        if outcome is Offer.SKIPPED:
            metrics.SKIPS.inc()
        elif outcome is Offer.CLOSE and self.close is None:
            metrics.SLOW_CLOSES.inc()
            self.close = (CLOSE_TOO_SLOW,
                          json.dumps({"resume_from": self.backlog.resume_from}))
            self.closed.set()
        self.wake.set()

    def push_text(self, text: str, wire: bytes | None = None) -> bool:
        """Queue a text frame; a shared one (``wire`` = its WebSocket frame, built once
        per edge) is written directly while the listener keeps up. True = written."""
        if self.kind == "ogg":
            return False  # state and levels do not travel in Ogg (and would block writes)
        if wire is not None and self._may_write_directly() and self.direct is not None \
                and self.direct.write(wire):
            return True
        if len(self.texts) >= MAX_TEXTS:
            self.texts.popleft()
        self.texts.append(text)
        self.wake.set()
        return False

    def end(self, code: int, reason: str) -> None:
        if self.close is None:
            self.close = (code, reason)
            self.closed.set()
        self.wake.set()

    def skip(self) -> Skip | None:
        return self.backlog.take_skip()

    def next_frame(self) -> Frame | None:
        item = self.backlog.take()
        return item[1] if item else None

    async def wait(self) -> None:
        """Until something is queued (cleared once everything queued is taken)."""
        if not self.texts and not len(self.backlog) and self.close is None:
            self.wake.clear()
            await self.wake.wait()


def _count(tally: dict[str, list[int]]) -> None:
    """Add one fan-out's [queued, direct] counts per kind to the metrics (not per listener)."""
    for kind, (queued, direct) in tally.items():
        if direct:
            metrics.DELIVERIES.labels(kind, "direct").inc(direct)
        if queued:
            metrics.DELIVERIES.labels(kind, "queued").inc(queued)


def _count_texts(direct: int, offered: int) -> None:
    """Shared text frames (state, levels) by path, once per fan-out."""
    if direct:
        metrics.TEXT_DELIVERIES.labels("direct").inc(direct)
    if offered - direct > 0:
        metrics.TEXT_DELIVERIES.labels("queued").inc(offered - direct)


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
        self.snapshot: dict[str, Any] | None = None
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
        tally: dict[str, list[int]] = {"ws": [0, 0], "ogg": [0, 0]}  # [queued, direct]
        for sub in self.subscribers:
            path = sub.push_frame(frame)
            if path != DUPLICATE:
                counts = tally.get(sub.kind)
                if counts is None:
                    counts = tally[sub.kind] = [0, 0]
                counts[path] += 1
        _count(tally)

    def flush(self) -> None:
        """Hand held chunks to every listener (one wake-up each for all of them)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        wires = {"ws": b"".join(f.ws_wire for f in pending),
                 "ogg": b"".join(f.ogg_wire for f in pending)}
        tally = {"ws": [0, 0], "ogg": [0, 0]}
        for sub in self.subscribers:
            sub.backlog.allow(len(pending))
            direct, queued = sub.push_frames(pending, wires[sub.kind])
            counts = tally.setdefault(sub.kind, [0, 0])
            counts[DIRECT] += direct
            counts[QUEUED] += queued
        _count(tally)

    def on_state(self, snap: dict[str, Any]) -> None:
        if self.snapshot is not None and int(snap.get("version", 0)) <= int(
                self.snapshot.get("version", 0)):
            return
        self.snapshot = public_view(snap)
        self.state_text = json.dumps({"type": "state", "snapshot": self.snapshot})
        wire = ws_text_frame(self.state_text)
        direct = 0
        for sub in self.subscribers:
            direct += sub.push_text(self.state_text, wire)
            if self.snapshot.get("state") == "ended":
                sub.end(CLOSE_ENDED, "space ended")
        _count_texts(direct, sum(1 for sub in self.subscribers if sub.kind == "ws"))

    def on_control(self, command: dict[str, Any]) -> None:
        """Kicks close that identity's connections; "ended" closes everyone."""
        if command.get("type") == "kick" and command.get("identity"):
            for sub in self.subscribers:
                if sub.identity == command["identity"]:
                    sub.end(CLOSE_REMOVED, "removed from this Space")
        elif command.get("type") == "ended":
            for sub in self.subscribers:
                sub.end(CLOSE_ENDED, "space ended")

    def on_levels(self, text: str) -> None:
        wire = ws_text_frame(text)
        direct = listeners = 0
        for sub in self.subscribers:
            if sub.kind == "ws":
                listeners += 1
                direct += sub.push_text(text, wire)
        _count_texts(direct, listeners)


class Hub:
    """All Space feeds of one edge process."""

    def __init__(self, bus: Bus, grace_s: float = GRACE_S) -> None:
        self.bus = bus
        self.grace_s = grace_s
        self.feeds: dict[str, Feed] = {}
        self.ogg = OggOpusStream()
        self._starting: dict[str, asyncio.Task[Feed]] = {}
        self.pacer = Pacer()
        self.coalesce = False
        self._tasks: set[asyncio.Future[None]] = set()  # refills of missed chunks

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
            subs = [s for f in self.feeds.values() for s in f.subscribers]
            behind = sum(1 for s in subs if s.behind())
            # A few stuck readers are their own problem (their backlog skips them);
            # many at once means this edge cannot keep up.
            share = behind / len(subs) if behind >= MIN_BEHIND else 0.0
            interval = self.pacer.observe(lag, share, busy)
            metrics.INTERVAL.set(interval)
            metrics.LOOP_LAG.set(lag)
            metrics.BUSY.set(self.pacer.busy)
            metrics.BEHIND.set(behind / len(subs) if subs else 0.0)
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
        """The Space's current snapshot from KV (internal keys kept; callers filter)."""
        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space)
        if entry is None:
            return None
        try:
            doc = json.loads(entry.value)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

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
                        snap = await self.snapshot(space)
                        if snap is not None:
                            feed.on_state(snap)
                    feed.on_control(body)

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
                     await self.bus.subscribe(subjects.levels(space), levels)]
        snap = await self.snapshot(space)
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
        if plan.source is Source.REPLAY:
            for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                             since_s=plan.since_s):
                with contextlib.suppress(BadInput):
                    replayed.append(feed.frame(msg.data))
        # No await from here on: nothing can arrive between catch-up and live.
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
                                      "reason": "not-held"}))
        sub.preload(catchup)
        feed.subscribers.add(sub)
        metrics.LISTENERS.labels(sub.kind).inc()
        return Joined(feed.ring.last_seq, start, resumed)

    def leave(self, space: str, sub: Subscriber) -> None:
        """Detach a listener; the last one out starts the grace timer."""
        feed = self.feeds.get(space)
        if feed is None or sub not in feed.subscribers:
            return
        feed.subscribers.discard(sub)
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
            for sub in feed.subscribers:
                sub.end(1001, "edge shutting down")
            for s in feed.subs:
                await s.unsubscribe()
        self.feeds.clear()
