"""The recorder: keeps a Space's program chunks from JetStream in the object store.

Runs in every api process. One of them records each Space, the holder of its lease in KV
``recorders``; it reads the Space's chunks through a durable MEDIA consumer
(``rec-<space>``), so whoever records next (after a restart or a lost lease) resumes at the
first chunk not yet acknowledged. A chunk is acknowledged only once the segment holding it
is stored, and a redelivered chunk is dropped by its sequence number: each chunk is kept
once. Levels (who spoke when) and the reaction totals over time (from the state messages)
are kept per segment beside it. When the Space has ended and
its last chunk is stored, the recorder builds the replay file once, stores it, and folds
``recording: {url, duration, ...}`` into the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from townhall.api.store import SpaceStore
from townhall.bus import Bus, subjects
from townhall.bus.bus import CasConflict, Message, PullConsumer
from townhall.bus.messages import decode_levels, decoded
from townhall.media.chunk import Chunk
from townhall.media.fmp4 import mp4_file
from townhall.media.recording import (
    RecordingIndex,
    SegmentInfo,
    SegmentWriter,
    decode_segment,
    ogg_file,
    timeline,
)
from townhall.problems import BadInput, NotFound
from townhall.room.snapshot import Recording, SnapshotError, Space, decode

log = logging.getLogger(__name__)

BUCKET = subjects.RECORDINGS_BUCKET
TEND_S = 1.0
RENEW_S = 3.0
SETTLE_S = 2.0  # after the end, chunks still in flight: wait this long for the last ones

SEGMENTS = Counter("townhall_recording_segments_total", "Recording segments stored")
FINISHED = Counter("townhall_recordings_finished_total", "Recordings made ready")


def index_name(space: str) -> str:
    """The object name of a Space's recording index."""
    return f"{space}/index"


def segment_name(space: str, n: int) -> str:
    """The object name of segment ``n`` of a Space's recording."""
    return f"{space}/seg/{n}"


def levels_name(space: str, n: int) -> str:
    """The object name of segment ``n``'s levels and reaction totals."""
    return f"{space}/levels/{n}"


def replay_name(space: str, ext: str = "opus") -> str:
    """The object name of a Space's replay file (``opus`` or ``m4a``)."""
    return f"{space}/replay.{ext}"


def clip_name(space: str, clip: str, ext: str = "opus") -> str:
    """The object name of one of a Space's clips (``opus`` or ``m4a``)."""
    return f"{space}/clips/{clip}.{ext}"


def in_spans(spans: list[list[float | None]], at: float) -> bool:
    """Whether wall time ``at`` falls in a span when recording was on."""
    return any(start is not None and start <= at and (end is None or at <= end)
               for start, end in spans)


async def load_index(bus: Bus, space: str) -> RecordingIndex | None:
    """The Space's stored recording index; None if it has none."""
    raw = await bus.obj_get(BUCKET, index_name(space))
    return RecordingIndex.decode(raw) if raw is not None else None


async def load_chunks(bus: Bus, space: str, segments: list[SegmentInfo]) -> list[Chunk]:
    """The chunks of these segments, in order."""
    out: list[Chunk] = []
    for seg in segments:
        raw = await bus.obj_get(BUCKET, segment_name(space, seg.n))
        if raw is None:
            raise NotFound("a segment of this recording is missing", slug="no-recording")
        out += decode_segment(raw)
    return out


async def delete_recording(bus: Bus, space: str, clips: list[str]) -> None:
    """Remove every object of a recording (on every node: the stream is purged)."""
    index = None
    with contextlib.suppress(BadInput):
        index = await load_index(bus, space)
    if index is not None:
        for seg in index.segments:
            await bus.obj_delete(BUCKET, segment_name(space, seg.n))
        for n in index.levels:
            await bus.obj_delete(BUCKET, levels_name(space, n))
    for clip in clips:
        await bus.obj_delete(BUCKET, clip_name(space, clip))
        await bus.obj_delete(BUCKET, clip_name(space, clip, "m4a"))
    await bus.obj_delete(BUCKET, replay_name(space))
    await bus.obj_delete(BUCKET, replay_name(space, "m4a"))
    await bus.obj_delete(BUCKET, index_name(space))


class SpaceRecording:
    """Records one Space while this process holds its lease."""

    def __init__(self, recorder: Recorder, space: str, lease: int) -> None:
        self.r = recorder
        self.bus = recorder.bus
        self.space = space
        self.lease = lease
        self.levels: list[dict[str, Any]] = []  # levels and reaction totals, wall time
        self.reactions: dict[str, int] | None = None
        self.unacked: list[Callable[[], Awaitable[None]]] = []

    async def run(self) -> None:
        """Record until the Space has ended and its replay is stored, then fold it into the
        snapshot; a recording already done is only folded."""
        space = self.space
        doc = await self.r.store.get(space)
        index = await load_index(self.bus, space) or RecordingIndex(space=space)
        if index.done:
            if doc.recording is True:  # stored, but not yet said in the snapshot
                await self._ready(doc, index)
            return
        writer = SegmentWriter.resume(index)
        self._note_reactions(doc.reactions)  # the baseline: only rises count
        spans = doc.record_spans
        first = min((s[0] for s in spans if s[0] is not None), default=time.time())
        since = dt.datetime.fromtimestamp(first - 1.0, dt.UTC)
        consumer = await self.bus.durable_pull(
            subjects.MEDIA_STREAM, subjects.recorder_durable(space), subjects.media(space),
            since=since)
        sub = await self.bus.subscribe(subjects.levels(space), self._on_levels)
        state_sub = await self.bus.subscribe(subjects.state(space), self._on_state)
        renewed = time.monotonic()
        try:
            while True:
                if time.monotonic() - renewed > RENEW_S:
                    await self._renew()
                    renewed = time.monotonic()
                    doc = await self.r.store.get(space)
                    spans = doc.record_spans
                got = await self._take(consumer, writer, spans, index)
                if got == 0 and doc.state == "ended" \
                        and time.time() > (doc.ended_at or 0) + SETTLE_S:
                    doc = await self.r.store.get(space)
                    break
        except BaseException:
            # Leaving (stop, lost lease): store what we hold so nothing waits on a redelivery.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store(writer.flush(), index))
            raise
        finally:
            await sub.unsubscribe()
            await state_sub.unsubscribe()
            await consumer.close()
        await self._store(writer.flush(), index)
        index.done = True
        await self.bus.obj_put(BUCKET, index_name(space), index.encode())
        await self._ready(doc, index)
        await self.bus.delete_consumer(subjects.MEDIA_STREAM, subjects.recorder_durable(space))

    async def _take(self, consumer: PullConsumer, writer: SegmentWriter,
                    spans: list[list[float | None]], index: RecordingIndex) -> int:
        batch = await consumer.fetch(200, timeout=1.0)
        for msg, ack in batch:
            self.unacked.append(ack)
            try:
                chunk = Chunk.decode(msg.data)
            except BadInput:
                continue
            if not in_spans(spans, chunk.sent_us / 1e6):
                continue
            done = writer.add(chunk)
            if done is not None:
                await self._store(done, index)
        if writer.pending == 0:
            await self._ack()
        return len(batch)

    async def _store(self, done: tuple[SegmentInfo, bytes] | None,
                     index: RecordingIndex) -> None:
        if done is not None:
            info, data = done
            await self.bus.obj_put(BUCKET, segment_name(self.space, info.n), data)
            if self.levels:
                await self.bus.obj_put(BUCKET, levels_name(self.space, info.n),
                                       json.dumps(self.levels).encode())
                index.levels.append(info.n)
                self.levels = []
            index.segments.append(info)
            await self.bus.obj_put(BUCKET, index_name(self.space), index.encode())
            SEGMENTS.inc()
        await self._ack()

    async def _ack(self) -> None:
        acks, self.unacked = self.unacked, []
        for ack in acks:
            with contextlib.suppress(Exception):
                await ack()

    async def _on_levels(self, msg: Message) -> None:
        got = decoded(decode_levels, msg.data, msg.subject, "unreadable levels", log)
        if got is None:
            return
        if len(self.levels) < 10_000:
            self.levels.append({"at": got.at, "levels": got.levels, "speaking": got.speaking})

    async def _on_state(self, msg: Message) -> None:
        """Keep the reaction totals whenever they change (at most 4 snapshots a second):
        the replay's reaction peaks come from them."""
        with contextlib.suppress(SnapshotError):
            self._note_reactions(decode(msg.data).reactions)

    def _note_reactions(self, got: dict[str, int]) -> None:
        if got != self.reactions and len(self.levels) < 10_000:
            self.reactions = got
            self.levels.append({"at": time.time(), "reactions": got})

    async def _renew(self) -> None:
        self.lease = await self.bus.kv_update(subjects.RECORDERS_BUCKET, self.space,
                                              self.r.node.encode(), self.lease)

    async def _ready(self, doc: Space, index: RecordingIndex) -> None:
        """Build the replay file once, store it, and say so in the snapshot."""
        space = self.space
        if not index.segments:
            log.info("nothing was recorded", extra={"space": space})
            await self.r.fold(space, False)
            return
        packets = [p for _, p in timeline(await load_chunks(self.bus, space, index.segments))]
        built = ogg_file(packets)
        await self.bus.obj_put(BUCKET, replay_name(space), built.data)
        m4a = mp4_file(packets)
        await self.bus.obj_put(BUCKET, replay_name(space, "m4a"), m4a)
        now = time.time()
        ended = doc.ended_at or now
        await self.r.fold(space, Recording(
            state="ready", url=f"/replay/{space}.opus", duration=round(built.duration_s, 3),
            bytes=len(built.data), m4a=f"/replay/{space}.m4a", m4a_bytes=len(m4a),
            ready_at=now, expires_at=ended + self.r.keep_days * 86400))
        FINISHED.inc()
        log.info("recording ready", extra={"space": space})


def _to_record(snap: Space | None) -> bool:
    """Recording on, and live (or ended, the file still to make): a scheduled Space has no
    audio yet, so nobody holds a consumer open for it."""
    return snap is not None and snap.recording is True and snap.state in ("live", "ended")


class Recorder:
    """Every Space being recorded that this process holds the lease of."""

    def __init__(self, bus: Bus, store: SpaceStore, node: str, keep_days: float) -> None:
        self.bus = bus
        self.store = store
        self.node = node
        self.keep_days = keep_days
        self.wanted: set[str] = set()
        self.running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._sub: Any = None

    async def fold(self, space: str, recording: Recording | bool) -> None:
        """Put the finished recording (or False: nothing kept) into the snapshot."""
        def change(s: Space) -> Space:
            if s.recording is not True:
                return s  # deleted meanwhile, or already folded
            s.recording = recording
            return s

        with contextlib.suppress(NotFound):
            await self.store.mutate(space, change)

    async def start(self) -> None:
        """Find the Spaces left mid-recording, then follow state messages and run the lease loop."""
        # Once at start: Spaces left mid-recording (e.g. by an api that stopped). Afterwards
        # the state messages say which Spaces to record.
        for key in await self.bus.kv_keys(subjects.SPACES_BUCKET):
            entry = await self.bus.kv_get(subjects.SPACES_BUCKET, key)
            with contextlib.suppress(SnapshotError):
                if entry is not None and _to_record(decode(entry.value)):
                    self.wanted.add(key)
        self._sub = await self.bus.subscribe("townhall.*.state", self._on_state)
        self._loop = asyncio.ensure_future(self._tend_loop())

    async def _on_state(self, msg: Message) -> None:
        with contextlib.suppress(SnapshotError):
            snap = decode(msg.data)
            if _to_record(snap):
                self.wanted.add(snap.id)

    async def _tend_loop(self) -> None:
        while True:
            try:
                await self.tend()
            except Exception:
                log.exception("recorder upkeep failed")
            await asyncio.sleep(TEND_S)

    async def tend(self) -> None:
        """Start recording the wanted Spaces whose lease nobody holds."""
        for space in list(self.wanted):
            if space in self.running:
                continue
            try:
                lease = await self.bus.kv_create(subjects.RECORDERS_BUCKET, space,
                                                 self.node.encode())
            except CasConflict:
                continue  # another api records it; if it dies, its lease lapses
            task = asyncio.ensure_future(self._record(space, lease))
            self.running[space] = task

    async def _record(self, space: str, lease: int) -> None:
        held = True
        try:
            await SpaceRecording(self, space, lease).run()
            self.wanted.discard(space)
        except CasConflict:
            held = False  # someone else's now: leave their lease alone
            log.warning("lost the recorder lease", extra={"space": space})
        except NotFound:
            self.wanted.discard(space)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording failed; will retry", extra={"space": space})
            await asyncio.sleep(2.0)
        finally:
            self.running.pop(space, None)
            if held:  # hand over at once rather than after the TTL
                with contextlib.suppress(Exception):
                    await self.bus.kv_delete(subjects.RECORDERS_BUCKET, space)

    async def stop(self) -> None:
        """Stop following, stop the loop and every recording task."""
        if self._loop is not None:
            self._loop.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
