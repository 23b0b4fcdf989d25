"""The AAC packager: encodes a Space's program to AAC-LC once, for every node to serve.

Runs in every api process; one of them packages each Space: the holder of the key
``aac.<id>`` in KV ``recorders`` (TTL 10 s, renewed every 3 s).

- **Live**: the first api asked for a live Space's AAC rendition takes the key, decodes
  the program chunks (the last 30 s from JetStream, then live) and publishes AAC batches
  (townhall.media.aac) on ``townhall.<id>.aac``, kept 60 s by the ``HLSAAC`` stream; every
  api serving HLS follows that subject. It stops when the Space ends, or when no api has
  said for AAC_IDLE_S that it was asked for the AAC (each says so on
  ``townhall.<id>.aacwant`` at most every WANT_EVERY_S while asked; nothing stores it).
  Whoever takes the key next (after a crash, or on the next request after such a stop)
  continues the stamps on the Space's clock where the stream's newest batch ends, from the
  chunks JetStream still holds, so a lost packager costs a pause, not a hole.
- **VOD**: once a recorded Space's recording is ready, the key's holder encodes the
  recording's packets (the very timeline of the Opus VOD) and stores each 2 s segment,
  then an index, in the ``recordings`` object store: ``<id>/aac/<k>``, ``<id>/aac/index``.
  They go when the recording is deleted or expires (the state says so) or the Space's
  document expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from prometheus_client import Counter

from townhall.api.store import SpaceStore
from townhall.bus import Bus, subjects
from townhall.bus.bus import CasConflict, Message
from townhall.media.aac import AacBatch, AacTranscoder
from townhall.media.chunk import Chunk
from townhall.media.fmp4 import AAC_FRAME_SAMPLES, media_segment
from townhall.media.hls import SEGMENT_SAMPLES, segment_of
from townhall.media.recording import timeline
from townhall.problems import BadInput, NotFound
from townhall.recording.recorder import BUCKET, load_chunks, load_index
from townhall.recording.retention import EXPIRED
from townhall.room.snapshot import Recording

log = logging.getLogger(__name__)

RENEW_S = 3.0
RETRY_S = 2.0       # a node asks for a Space's key at most this often
BACKFILL_S = 30.0   # of program audio encoded on taking the key (covers a takeover's gap)
AAC_IDLE_S = 60.0   # live AAC is encoded this long after the last "wanted" from any api
WANT_EVERY_S = 10.0  # an api says a Space's AAC is wanted at most this often

BATCHES = Counter("townhall_aac_batches_total", "AAC batches published (live HLS)")
VOD_SEGMENTS = Counter("townhall_aac_vod_segments_total", "AAC VOD segments stored")


def aac_index_name(space: str) -> str:
    """The object name of a Space's AAC VOD index."""
    return f"{space}/aac/index"


def aac_segment_name(space: str, k: int) -> str:
    """The object name of segment ``k`` of a Space's AAC VOD."""
    return f"{space}/aac/{k}"


def recording_tag(rec: Recording) -> str:
    """Which recording (a deleted and re-made one differs) its derived files belong to."""
    return f"{int(rec.ready_at * 1000)}"


@dataclass
class AacIndex:
    """The stored AAC VOD: segments ``first ..`` with their lengths in samples."""

    tag: str
    first: int
    lengths: list[int]

    def encode(self) -> bytes:
        """The index as compact JSON, as stored."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> AacIndex:
        """An index stored by ``encode``; BadInput if it is not one."""
        try:
            raw = json.loads(data)
            return cls(tag=str(raw["tag"]), first=int(raw["first"]),
                       lengths=[int(n) for n in raw["lengths"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput("AAC index damaged", slug="bad-index") from exc


async def load_aac_index(bus: Bus, space: str) -> AacIndex | None:
    """The Space's stored AAC VOD index; None if there is none (or it is damaged: made again)."""
    raw = await bus.obj_get(BUCKET, aac_index_name(space))
    if raw is None:
        return None
    with contextlib.suppress(BadInput):
        return AacIndex.decode(raw)
    return None


def runs(frames: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """Split stamped frames where the stamps jump (a new encoder): one batch per run."""
    out: list[list[tuple[int, bytes]]] = []
    for stamp, frame in frames:
        if out and out[-1][-1][0] + AAC_FRAME_SAMPLES == stamp:
            out[-1].append((stamp, frame))
        else:
            out.append([(stamp, frame)])
    return out


def transcode_recording(chunks: list[Chunk]) -> list[tuple[int, bytes]]:
    """The whole recording in AAC, stamped (CPU-bound: run it in a thread)."""
    tx = AacTranscoder()
    out: list[tuple[int, bytes]] = []
    for pts, packet in timeline(chunks):
        out += tx.push_packet(pts, packet)
    return out + tx.finish()


def vod_segments(frames: list[tuple[int, bytes]]) -> dict[int, tuple[int, list[bytes]]]:
    """Stamped frames grouped by segment: ``k -> (first stamp, frames)``."""
    out: dict[int, tuple[int, list[bytes]]] = {}
    for stamp, frame in frames:
        out.setdefault(segment_of(stamp), (stamp, []))[1].append(frame)
    return out


class Lease:
    """This node's hold on a Space's packager key."""

    def __init__(self, bus: Bus, space: str, node: str, revision: int) -> None:
        self.bus, self.space, self.node, self.revision = bus, space, node, revision
        self.renewed = time.monotonic()

    async def keep(self) -> bool:
        """Renew if due (then True); CasConflict when someone else holds it now."""
        if time.monotonic() - self.renewed < RENEW_S:
            return False
        self.revision = await self.bus.kv_update(
            subjects.RECORDERS_BUCKET, subjects.packager_key(self.space),
            self.node.encode(), self.revision)
        self.renewed = time.monotonic()
        return True


Job = Callable[[str, Lease], Awaitable[None]]


class Packager:
    """The Spaces whose AAC this process encodes."""

    def __init__(self, bus: Bus, store: SpaceStore, node: str, *,
                 idle_s: float = AAC_IDLE_S, want_every_s: float = WANT_EVERY_S) -> None:
        self.bus = bus
        self.store = store
        self.node = node
        self.idle_s = idle_s
        self.want_every_s = want_every_s
        self._said: dict[str, float] = {}  # when this node last said a Space's AAC is wanted
        self._saying: set[asyncio.Task[None]] = set()
        self.running: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}
        self._next: dict[str, Job] = {}
        self._asked: dict[str, float] = {}

    def want_live(self, space: str) -> None:
        """Someone asked this node for a live Space's AAC: make sure someone encodes it,
        and tell whoever does that it is still wanted."""
        now = time.monotonic()
        if now - self._said.get(space, -self.want_every_s) >= self.want_every_s:
            self._said[space] = now
            if len(self._said) > 10_000:
                self._said = {s: t for s, t in self._said.items()
                              if now - t < self.want_every_s}
            task = asyncio.ensure_future(self._say_wanted(space))
            self._saying.add(task)
            task.add_done_callback(self._saying.discard)
        self._spawn(space, self._live)

    async def _say_wanted(self, space: str) -> None:
        with contextlib.suppress(Exception):  # the next request says it again
            await self.bus.publish(subjects.aac_wanted(space), b"")

    def want_vod(self, space: str) -> None:
        """A recorded Space's recording is ready: make sure its AAC VOD gets made."""
        self._spawn(space, self._vod)

    def want_drop(self, space: str) -> None:
        """A Space ended without a recording (or its recording was deleted): its AAC VOD,
        if it had one, goes."""
        self._spawn(space, self._drop)

    def _spawn(self, space: str, job: Job, *, now_or_never: bool = False) -> None:
        now = time.monotonic()
        if space in self.running:
            if job != self._jobs.get(space):
                self._next[space] = job  # e.g. the recording is ready as the live job ends
            return
        if not now_or_never and now - self._asked.get(space, -RETRY_S) < RETRY_S:
            return
        self._asked[space] = now
        if len(self._asked) > 10_000:
            self._asked = {s: t for s, t in self._asked.items() if now - t < RETRY_S}
        task = asyncio.ensure_future(self._hold(space, job))
        self.running[space] = task
        self._jobs[space] = job

        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(space, None)
            self._jobs.pop(space, None)
            then = self._next.pop(space, None)
            if then is not None and not task.cancelled():
                self._spawn(space, then, now_or_never=True)

        task.add_done_callback(done)

    async def _hold(self, space: str, job: Job) -> None:
        key = subjects.packager_key(space)
        try:
            revision = await self.bus.kv_create(subjects.RECORDERS_BUCKET, key,
                                                self.node.encode())
        except CasConflict:
            return  # another api packages it; if it dies its key lapses
        except Exception:
            log.exception("could not ask for the packager key", extra={"space": space})
            return
        held = True
        try:
            await job(space, Lease(self.bus, space, self.node, revision))
        except CasConflict:
            held = False
            log.warning("lost the packager key", extra={"space": space})
        except NotFound:
            pass  # the Space (or its recording) went meanwhile
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("AAC packaging failed", extra={"space": space})
        finally:
            if held:  # hand over at once rather than after the TTL
                with contextlib.suppress(Exception):
                    await self.bus.kv_delete(subjects.RECORDERS_BUCKET, key)

    # --- live ---------------------------------------------------------------------------

    async def _live(self, space: str, lease: Lease) -> None:
        seq, start, done = 0, None, -1
        last = await self.bus.last_message(subjects.AAC_STREAM, subjects.aac(space))
        if last is not None:
            with contextlib.suppress(BadInput):
                prev = AacBatch.decode(last.data)
                seq, start, done = prev.seq + 1, prev.end_pts, prev.src
        tx = AacTranscoder(start_pts=start)
        queue: asyncio.Queue[Chunk] = asyncio.Queue()
        wanted = time.monotonic()  # this job was started by a request

        async def on_chunk(msg: Message) -> None:
            with contextlib.suppress(BadInput):
                queue.put_nowait(Chunk.decode(msg.data))

        async def on_wanted(_: Message) -> None:
            nonlocal wanted
            wanted = time.monotonic()

        wants = await self.bus.subscribe(subjects.aac_wanted(space), on_wanted)
        sub = await self.bus.subscribe(subjects.media(space), on_chunk)
        try:
            backlog = []
            for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                             since_s=BACKFILL_S, limit=1000):
                with contextlib.suppress(BadInput):
                    backlog.append(Chunk.decode(msg.data))
            for chunk in sorted(backlog, key=lambda c: c.seq):
                seq, done = await self._encode(space, tx, chunk, seq, done)
            while True:
                if time.monotonic() - wanted > self.idle_s:
                    log.info("live AAC no longer asked for: stopped", extra={"space": space})
                    return
                if await lease.keep():  # and, as often, whether the Space is still live
                    doc = await self.store.get(space)
                    if doc.state != "live":
                        return
                try:
                    chunk = await asyncio.wait_for(queue.get(),
                                                   min(RENEW_S, self.idle_s / 3))
                except TimeoutError:
                    continue
                seq, done = await self._encode(space, tx, chunk, seq, done)
        finally:
            await sub.unsubscribe()
            await wants.unsubscribe()

    async def _encode(self, space: str, tx: AacTranscoder, chunk: Chunk, seq: int,
                      done: int) -> tuple[int, int]:
        if chunk.seq <= done:
            return seq, done
        for run in runs(tx.push(chunk)):
            batch = AacBatch(seq=seq, pts=run[0][0], src=chunk.seq,
                             frames=tuple(f for _, f in run))
            await self.bus.publish(subjects.aac(space), batch.encode())
            BATCHES.inc()
            seq += 1
        return seq, chunk.seq

    # --- VOD ----------------------------------------------------------------------------

    async def _vod(self, space: str, lease: Lease) -> None:
        rec = (await self.store.get(space)).finished
        if rec is None:
            return
        tag = recording_tag(rec)
        made = await load_aac_index(self.bus, space)
        if made is not None and made.tag == tag:
            return
        index = await load_index(self.bus, space)
        if index is None or not index.segments:
            return
        chunks = await load_chunks(self.bus, space, index.segments)
        frames = await asyncio.to_thread(transcode_recording, chunks)
        segments = vod_segments(frames)
        if not segments:
            return
        first = min(segments)
        lengths = []
        for k in range(first, max(segments) + 1):
            stamp, packed = segments.get(k, (k * SEGMENT_SAMPLES, []))
            await lease.keep()
            await self.bus.obj_put(BUCKET, aac_segment_name(space, k), media_segment(
                packed, sequence=k + 1, decode_time=stamp, sample_duration=AAC_FRAME_SAMPLES))
            lengths.append(len(packed) * AAC_FRAME_SAMPLES)
            VOD_SEGMENTS.inc()
        await self.bus.obj_put(BUCKET, aac_index_name(space),
                               AacIndex(tag=tag, first=first, lengths=lengths).encode())
        log.info("AAC rendition ready", extra={"space": space})

    async def _drop(self, space: str, lease: Lease) -> None:
        rec = (await self.store.get(space)).finished
        if rec is None or rec.state == EXPIRED:
            await self.drop(space)

    async def drop(self, space: str) -> None:
        """Delete a Space's AAC VOD (its recording was deleted, or expires)."""
        made = await load_aac_index(self.bus, space)
        if made is None:
            return
        await self.bus.obj_delete(BUCKET, aac_index_name(space))
        for i in range(len(made.lengths)):
            await self.bus.obj_delete(BUCKET, aac_segment_name(space, made.first + i))

    async def stop(self) -> None:
        """Cancel every packaging task and wait for them to end."""
        tasks = [*self.running.values(), *self._saying]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
