"""Per-Space feeds on one edge: subscribe on demand, encode each chunk once, fan it out.

Fan-out does nothing per listener but write shared bytes: each Feed keeps the listeners
that are keeping up in a "fast set" and writes every chunk to them in one tight loop. A
listener leaves the fast set on an event — its socket pauses writing (the transport's
high-water mark), a text frame of its own is queued, it must be told about a skip, it is
closing — and is then served through its bounded backlog until it has drained
(``resume_writing``), when it rejoins the fast set.

The loop itself: a listener whose outlet has a socket (edge/fanout.py's ``Outlet``: a socket
object on the transport's file descriptor, with the transport's high-water mark at 0 so that
it is paused whenever the transport holds a byte) is sent to with ``socket.send`` called by
``map`` — one ``send(2)`` per listener and no Python bytecode per listener (docs/edge.md
says what that saves over ``transport.write``). A short or
refused send hands the rest to the transport, which buffers it and pauses the listener;
byte order holds because a fast listener's transport holds nothing. Listeners without a
socket (TLS, unit tests' fake transports) get ``write(data)`` in a plain loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from townhall.bus import Bus, subjects
from townhall.bus.bus import Message, Subscription
from townhall.bus.messages import (
    SpaceEnded,
    decode_control,
    decode_levels,
    decoded,
    levels_frame,
)
from townhall.edge import metrics
from townhall.edge.feed import Feed, Joined, parse_doc
from townhall.edge.frame import Frame
from townhall.edge.guard import ReplayBudget, ReplayChoice, replay_rate_from_env
from townhall.edge.pacer import STEPS_S, Pacer
from townhall.edge.resume import Source, plan_resume, stitch
from townhall.edge.subscriber import Subscriber
from townhall.media.ogg import OggOpusStream
from townhall.problems import BadInput
from townhall.room.snapshot import Space

log = logging.getLogger(__name__)

GRACE_S = 10.0          # keep a Space's subscriptions this long after its last listener
TICK_S = STEPS_S[0]
MIN_BEHIND = 10         # fewer listeners behind than this is not edge overload
REPAIR_LOOKBACK_S = 15.0
REPAIR_TIMEOUT_S = 1.0
REPAIR_BOUND_S = 2.0    # a whole refill: the live chunks behind the hole wait for it
DOC_TTL_S = 5.0         # a watched KV entry older than this is read again on the next join


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
        self._reads: dict[str, asyncio.Future[Space | None]] = {}  # KV reads

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
        """Listeners on this edge, every Space together."""
        return sum(len(f.subscribers) for f in self.feeds.values())

    async def snapshot(self, space: str) -> Space | None:
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

    async def _read(self, space: str) -> Space | None:
        feed = self.feeds.get(space)
        now = asyncio.get_running_loop().time()
        seen = feed.doc_seen if feed is not None else 0
        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space)
        raw = entry.value if entry is not None else None
        if feed is None or self.feeds.get(space) is not feed:
            return parse_doc(raw)
        if feed.doc_seen == seen:  # no watched update while we read: ours is current
            feed.on_doc(raw, now)
        return feed.doc()

    async def _open(self, space: str) -> Feed:
        feed = Feed(space, self.ogg)
        feed.coalesce = self.coalesce
        feed.repairs = True
        feed.subs = await FeedHandlers(self.bus, feed, self._tasks).subscribe()
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
                   snap: Space | None = None) -> Joined:
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
        """Stop the refills, close every listener (1001) and unsubscribe."""
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


class FeedHandlers:
    """The bus handlers of one open feed: its Space's media, control, state, levels and
    KV entry handed to the feed, and the refill of chunks the feed found missing."""

    def __init__(self, bus: Bus, feed: Feed, tasks: set[asyncio.Future[None]]) -> None:
        self.bus = bus
        self.feed = feed
        self.space = feed.space
        self._tasks = tasks  # the hub's, so that closing the hub stops the refills

    async def subscribe(self) -> list[Subscription]:
        """Subscribe every handler; the KV entry is watched before the feed's first read,
        so no update falls in between."""
        space = self.space
        return [await self.bus.subscribe(subjects.media(space), self.media),
                await self.bus.subscribe(subjects.control(space), self.control),
                await self.bus.subscribe(subjects.state(space), self.state),
                await self.bus.subscribe(subjects.levels(space), self.levels),
                await self.bus.subscribe(
                    subjects.kv_key(subjects.SPACES_BUCKET, space), self.doc)]

    async def media(self, msg: Message) -> None:
        """A chunk; a gap it reveals is refilled from JetStream in the background."""
        gap = self.feed.on_media(msg.data)
        if gap is not None:
            self._tasks.add(task := asyncio.ensure_future(self.refill(gap.first, gap.last)))
            task.add_done_callback(self._tasks.discard)

    async def state(self, msg: Message) -> None:
        """A snapshot published by the api."""
        snap = parse_doc(msg.data)
        if snap is not None:
            self.feed.on_state(snap)

    async def levels(self, msg: Message) -> None:
        """The speaking levels, passed on to listeners as a ``levels`` frame."""
        levels = decoded(decode_levels, msg.data, msg.subject, "unreadable levels", log)
        if levels is not None:
            self.feed.on_levels(levels_frame(levels))

    async def control(self, msg: Message) -> None:
        """A control message: a kick, or the Space's end."""
        command = decoded(decode_control, msg.data, msg.subject, "a control message", log)
        if command is None:
            return
        if isinstance(command, SpaceEnded):
            # Send the final "ended" snapshot before closing, if KV has it.
            entry = await self.bus.kv_get(subjects.SPACES_BUCKET, self.space)
            snap = parse_doc(entry.value if entry is not None else None)
            if snap is not None:
                self.feed.on_state(snap)
        self.feed.on_control(command)

    async def doc(self, msg: Message) -> None:
        """A change of the Space's KV entry (a deletion is None)."""
        deleted = msg.headers.get("KV-Operation") in ("DEL", "PURGE")
        self.feed.on_doc(None if deleted else msg.data, asyncio.get_running_loop().time())

    async def refill(self, first: int, last: int) -> None:
        """Chunks ``first``..``last`` from JetStream, handed to the feed in any case."""
        found: list[Frame] = []
        try:
            # Bounded as a whole: the live chunks wait behind it, and creating the
            # replay's consumer waits out the bus timeout (10 s) while JetStream elects.
            msgs = await asyncio.wait_for(self.bus.replay(
                subjects.MEDIA_STREAM, subjects.media(self.space), since_s=REPAIR_LOOKBACK_S,
                timeout=REPAIR_TIMEOUT_S), REPAIR_BOUND_S)
            for msg in msgs:
                with contextlib.suppress(BadInput):
                    frame = self.feed.frame(msg.data)
                    if first <= frame.seq <= last:
                        found.append(frame)
        except Exception:  # the bus is reconnecting: deliver what we have
            log.warning("could not refill chunks %d-%d of %s", first, last, self.space)
        finally:
            metrics.REFILLED.inc(len(found))
            self.feed.repaired(found)
