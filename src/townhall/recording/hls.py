"""The HLS origin: ``/hls/<id>/index.m3u8`` (the Opus media playlist, as ``opus.m3u8``),
``master.m3u8`` (the multivariant playlist: Opus and AAC), ``aac.m3u8``, their init
segments, segments and parts.

While a Space is live, any api node answers from NATS: on the first request it follows the
Space's chunks (Opus, the last minute from JetStream, then live) or its AAC batches (made
once per Space by townhall.recording.aacpackager) and cuts 2 s segments and 0.5 s parts from
them; a playlist request may block until a part exists (LL-HLS). After a recorded Space's
recording is ready, the same URLs serve the whole recording (VOD, ``#EXT-X-ENDLIST``) from
the object store. Segments never change once listed: ``immutable``; playlists are
short-lived.

What may be cached is: the Space's document (who may listen) for ACCESS_TTL_S, and
forgotten as soon as its state changes; segments, parts and VOD playlists once built. So a
CDN pulling segments costs a dictionary look-up, never a NATS round trip. The grants
themselves are decided on every request, from that document.

``?t=<ticket>`` (a signed link, townhall.recording.tickets) stands in for the bearer token
on every resource, for players that cannot send one: the playlists then carry it on to
every URI they list, and every such answer is ``private`` and never repeated by the fast
path. A ticket minted while the Space is live (its tag ``live``) plays the live HLS; the
VOD needs one minted once the recording is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from prometheus_client import Counter

from townhall import grants
from townhall.api.schemas import problems
from townhall.bus import Bus, subjects
from townhall.bus.bus import Message, Subscription
from townhall.context import Context
from townhall.media.aac import AacBatch
from townhall.media.chunk import Chunk
from townhall.media.fmp4 import AAC_FRAME_SAMPLES, aac_init_segment, init_segment, media_segment
from townhall.media.hls import (
    AAC,
    BLOCK_S,
    OPUS,
    PARTS,
    SEGMENT_SAMPLES,
    Directive,
    Playlist,
    Rendition,
    Resource,
    directive,
    live_playlist,
    master_playlist,
    packets_between,
    parse_name,
    part_bounds,
    segment_bounds,
    vod_playlist,
    with_query,
)
from townhall.media.recording import RecordingIndex
from townhall.problems import BadInput, Conflict, Gone, NotFound, Unauthorized, Unavailable
from townhall.recording.aacpackager import (
    AacIndex,
    Packager,
    aac_segment_name,
    load_aac_index,
    recording_tag,
)
from townhall.recording.recorder import BUCKET, load_chunks, load_index
from townhall.recording.retention import EXPIRED
from townhall.recording.routes import Ticket, cache_control, restricted
from townhall.recording.tickets import Tickets
from townhall.recording.tickets import recording_tag as ticket_tag
from townhall.room.rules import is_space_id
from townhall.room.snapshot import Recording, SnapshotError, Space, decode

IMMUTABLE = "public, max-age=31536000, immutable"
LIVE_PLAYLIST = "public, max-age=1"
VOD_PLAYLIST = "public, max-age=30"
M3U8 = "application/vnd.apple.mpegurl"
MP4 = "video/mp4"  # CMAF segments; audio-only players take it alike
HOLD_S = 60.0         # of a live Space: frames kept per node (what the streams hold)
IDLE_S = 60.0         # a live feed nobody asked for this long is closed
ACCESS_TTL_S = 2.0    # a Space's document (its grants) is reused this long at most
FIRST_WAIT_S = 4.0    # a first AAC playlist waits this long for the packager's segment
NOT_READY_S = 5.0     # "the AAC VOD is not made yet" is believed this long
KEPT = 1024           # segments and parts kept built (about 15 KB each)
INITS = {OPUS.name: init_segment(), AAC.name: aac_init_segment()}
FAST = Counter("townhall_hls_fast_answers_total",
               "HLS answers repeated to anonymous callers without routing (FastPath)")


def keep(held: OrderedDict[Any, Any], key: Any, value: Any, size: int = KEPT) -> None:
    """Put ``key`` in a bounded cache, dropping the least recently put."""
    held[key] = value
    held.move_to_end(key)
    while len(held) > size:
        held.popitem(last=False)


class Feed:
    """One rendition of a live Space as this node holds it, from NATS."""

    def __init__(self, bus: Bus, space: str) -> None:
        self.bus = bus
        self.space = space
        self.used = time.monotonic()
        self.newest_end = 0
        self.oldest = 0
        self._changed = asyncio.Event()
        self._sub: Subscription | None = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, end: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the newest frame ends at ``end`` or later."""
        deadline = time.monotonic() + timeout
        while self.newest_end < end:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def wait_change(self, timeout: float) -> None:
        """Wait until something new arrives, at most ``timeout`` s (a blocking reload's wait)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def samples(self, lo: int, hi: int) -> int:
        """Samples of audio held in ``[lo, hi)``."""
        return hi - lo

    async def close(self) -> None:
        """Stop following the Space."""
        if self._sub is not None:
            await self._sub.unsubscribe()


class OpusFeed(Feed):
    """A live Space's program chunks: the Opus rendition is cut from them as they are."""

    def __init__(self, bus: Bus, space: str) -> None:
        super().__init__(bus, space)
        self.chunks: dict[int, Chunk] = {}

    async def open(self) -> None:
        """Follow the Space's chunks: live from now on, and what JetStream holds of the last
        HOLD_S seconds."""
        self._sub = await self.bus.subscribe(subjects.media(self.space), self._on_chunk)
        for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(self.space),
                                         since_s=HOLD_S, limit=1000):
            self._add(msg)

    async def _on_chunk(self, msg: Message) -> None:
        self._add(msg)

    def _add(self, msg: Message) -> None:
        with contextlib.suppress(BadInput):
            chunk = Chunk.decode(msg.data)
            if chunk.seq in self.chunks:
                return
            self.chunks[chunk.seq] = chunk
            self.newest_end = max(self.newest_end, chunk.pts + chunk.duration_samples)
            limit = self.newest_end - int(HOLD_S * 48_000)
            for seq in [s for s, c in self.chunks.items() if c.pts < limit]:
                del self.chunks[seq]
            self.oldest = min((c.pts for c in self.chunks.values()), default=0)
            self._notify()

    def media(self, k: int, j: int | None) -> bytes:
        """Segment ``k`` (or its part ``j``) as fMP4; NotFound once it is no longer held."""
        lo, hi = segment_bounds(k) if j is None else part_bounds(k, j)
        packets = packets_between([self.chunks[s] for s in sorted(self.chunks)], lo, hi)
        if not packets:
            raise NotFound("this segment is no longer held", slug="no-segment")
        return media_segment(packets, sequence=k + 1 if j is None else k * PARTS + j + 1,
                             decode_time=lo)


class AacFeed(Feed):
    """A live Space's AAC frames, by stamp, as its packager publishes them."""

    def __init__(self, bus: Bus, space: str) -> None:
        super().__init__(bus, space)
        self.stamps: list[int] = []
        self.frames: dict[int, bytes] = {}

    async def open(self) -> None:
        """Follow the Space's AAC batches: live from now on, and what JetStream still holds."""
        self._sub = await self.bus.subscribe(subjects.aac(self.space), self._on_batch)
        for msg in await self.bus.replay(subjects.AAC_STREAM, subjects.aac(self.space),
                                         since_s=HOLD_S, limit=1000):
            self._add(msg)

    async def _on_batch(self, msg: Message) -> None:
        self._add(msg)

    def _add(self, msg: Message) -> None:
        with contextlib.suppress(BadInput):
            batch = AacBatch.decode(msg.data)
            for stamp, frame in batch.stamped():
                if stamp not in self.frames:
                    insort(self.stamps, stamp)
                    self.frames[stamp] = frame
            self.newest_end = max(self.newest_end, batch.end_pts)
            limit = self.newest_end - int(HOLD_S * 48_000)
            cut = bisect_left(self.stamps, limit)
            for stamp in self.stamps[:cut]:
                del self.frames[stamp]
            del self.stamps[:cut]
            self.oldest = self.stamps[0] if self.stamps else 0
            self._notify()

    def samples(self, lo: int, hi: int) -> int:
        """Samples of the AAC frames held in ``[lo, hi)``, in whole frames."""
        return (bisect_left(self.stamps, hi) - bisect_left(self.stamps, lo)) * AAC_FRAME_SAMPLES

    def media(self, k: int, j: int | None) -> bytes:
        """Segment ``k`` (or its part ``j``) as fMP4; NotFound once it is no longer held."""
        lo, hi = segment_bounds(k) if j is None else part_bounds(k, j)
        stamps = self.stamps[bisect_left(self.stamps, lo):bisect_left(self.stamps, hi)]
        if not stamps:
            raise NotFound("this segment is no longer held", slug="no-segment")
        return media_segment([self.frames[t] for t in stamps],
                             sequence=k + 1 if j is None else k * PARTS + j + 1,
                             decode_time=stamps[0], sample_duration=AAC_FRAME_SAMPLES)


class AccessCache:
    """Spaces' documents (or their absence) for a short while: who may listen is then
    decided without a NATS round trip. A state message about a Space drops its entry."""

    def __init__(self, fetch: Any, ttl: float = ACCESS_TTL_S, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._held: OrderedDict[str, tuple[float, Space | None]] = OrderedDict()

    async def get(self, space: str) -> Space:
        """The Space's document, from the cache while it is young; NotFound if there is none."""
        now = self.clock()
        held = self._held.get(space)
        if held is None or now - held[0] > self.ttl:
            try:
                snap: Space | None = await self._fetch(space)
            except NotFound:
                snap = None
            held = (now, snap)
            keep(self._held, space, held, self.size)
        if held[1] is None:
            raise NotFound(f"no Space {space}", slug="space-not-found")
        return held[1]

    def fresh(self, space: str) -> Space | None:
        """The document if it is held and young enough to decide by (no I/O)."""
        held = self._held.get(space)
        if held is None or self.clock() - held[0] > self.ttl:
            return None
        return held[1]

    def forget(self, space: str) -> None:
        """Drop what is held of the Space (it changed)."""
        self._held.pop(space, None)


def kind_of(snap: Space) -> str | None:
    """Where a Space's HLS comes from: ``vod``, ``live``, or None (a refusal)."""
    if snap.finished is not None:
        return "vod"
    return "live" if snap.state == "live" else None


@dataclass(frozen=True)
class Answer:
    """A whole response the fast path may repeat to anonymous callers."""

    space: str
    kind: str
    expires_at: float
    start: dict[str, Any]
    body: dict[str, Any]


class FastPath:
    """Repeats answers already given to anonymous callers of public Spaces (segments,
    parts, init segments, VOD playlists), before routing: the same grants decision as the
    route's (anonymous, public, the Space's document at most ACCESS_TTL_S old, the same
    source), at the cost of a dictionary look-up. Anything else goes to the routes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer from a repeatable answer, or pass the request on to the app."""
        if scope["type"] == "http" and scope["method"] == "GET" \
                and scope["path"].startswith("/hls/") and not scope["query_string"]:
            origin: HlsOrigin | None = getattr(scope["app"].state, "hls", None) \
                if "app" in scope else None
            answer = origin.repeat(scope) if origin is not None else None
            if answer is not None:
                FAST.inc()
                # A copy: outer middleware may add headers to the message it is given.
                await send({**answer.start, "headers": list(answer.start["headers"])})
                await send(answer.body)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Source:
    """Where a Space's HLS comes from for this request: ``live`` or ``vod``."""

    space: str
    kind: str
    snap: Space
    rec: Recording | None   # a VOD's recording
    ticket: str | None = None  # the signed link's, carried on to the URIs listed

    @property
    def tag(self) -> str:
        """What a built answer is tied to: the recording's version, or ``live``."""
        return recording_tag(self.rec) if self.rec is not None else "live"

    def cache(self, value: str) -> str:
        """``value`` for a shared cache, or made ``private``: the Space needs a token to
        listen, or the answer was to a ticket (a URL that may not be shared)."""
        return value.replace("public", "private") if self.ticket is not None \
            else cache_control(value, self.snap)

    def carry(self, playlist: str) -> str:
        """The playlist with this request's ticket on every URI it lists."""
        if self.ticket is None:
            return playlist
        return with_query(playlist, "t=" + urllib.parse.quote(self.ticket, safe=""))


class HlsOrigin:
    """This node's HLS: its live feeds, the Spaces' grants and what it has built."""

    def __init__(self, ctx: Context, api: Any, tickets: Tickets) -> None:
        self.ctx = ctx
        self.api = api
        self.tickets = tickets
        self.bus = ctx.bus
        self.access = AccessCache(api.store.get)
        self.packager = Packager(ctx.bus, api.store, ctx.settings.node_id)
        self.feeds: dict[tuple[str, str], OpusFeed | AacFeed] = {}
        self._opening: dict[tuple[str, str], asyncio.Lock] = {}
        self.indexes: OrderedDict[str, tuple[str, RecordingIndex]] = OrderedDict()
        self.aac_indexes: OrderedDict[str, tuple[str, float, AacIndex | None]] = \
            OrderedDict()
        self.built: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.playlists: OrderedDict[tuple[str, str], tuple[Any, str]] = OrderedDict()
        self.answers: OrderedDict[str, Answer] = OrderedDict()
        self.route: Any = None  # the route the fast path's answers count under
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None

    def remember(self, request: Request, src: Source, response: Response) -> None:
        """Keep an answer to an anonymous caller of a public Space for the fast path."""
        if request.url.query or src.ticket is not None or restricted(src.snap) \
                or "authorization" in request.headers:
            return
        keep(self.answers, request.url.path, Answer(
            src.space, src.kind, src.rec.expires_at if src.rec else 0.0,
            {"type": "http.response.start", "status": 200,
             "headers": list(response.raw_headers)},
            {"type": "http.response.body", "body": response.body}), KEPT * 2)

    def repeat(self, scope: Any) -> Answer | None:
        """The answer to repeat to this request, if the grants still allow it."""
        answer = self.answers.get(scope["path"])
        if answer is None or any(k == b"authorization" for k, _ in scope["headers"]):
            return None
        snap = self.access.fresh(answer.space)
        if snap is None or restricted(snap) or kind_of(snap) != answer.kind:
            return None
        if answer.kind == "vod" and time.time() >= answer.expires_at:
            return None
        if self.route is not None:
            scope["route"] = self.route  # for the request metrics' label
        return answer

    async def start(self) -> None:
        """Follow every Space's state messages and start reaping idle feeds."""
        self._sub = await self.bus.subscribe("townhall.*.state", self._on_state)
        self._tasks.append(asyncio.ensure_future(self._reap()))

    async def stop(self) -> None:
        """Stop reaping and following; close every feed and the packager."""
        for task in self._tasks:
            task.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()
        await self.packager.stop()
        for feed in list(self.feeds.values()):
            await feed.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(10)
            now = time.monotonic()
            for key, feed in list(self.feeds.items()):
                if now - feed.used > IDLE_S:
                    self.feeds.pop(key, None)
                    self.playlists.pop(key, None)
                    await feed.close()

    async def _on_state(self, msg: Message) -> None:
        space = msg.subject.split(".")[1]
        self.access.forget(space)
        with contextlib.suppress(SnapshotError):
            snap = decode(msg.data)
            rec = snap.finished
            if rec is not None and rec.state == "ready":
                held = self.aac_indexes.get(space)
                if held is None or held[2] is None or held[0] != recording_tag(rec):
                    self.packager.want_vod(space)
            elif (snap.state == "ended" and snap.recording is False) or (
                    rec is not None and rec.state == EXPIRED):
                self.aac_indexes.pop(space, None)
                self.packager.want_drop(space)

    # --- who may listen, and from where ----------------------------------------------

    async def source(self, space: str, request: Request, ticket: str | None = None
                     ) -> Source:
        """The Space's HLS source, if this caller may listen to it: by a ticket for this
        Space in its current state (checked before any lookup, as on /replay), else by
        townhall.grants."""
        if not is_space_id(space):
            raise NotFound(f"no Space {space}", slug="space-not-found")
        if ticket is not None:
            tag = self.tickets.check(ticket, space, now=time.time())
            snap = await self.access.get(space)
            if tag != ticket_tag(snap):
                raise Unauthorized("this link was made for an earlier state of the Space "
                                   "(live, or its recording): open the page again",
                                   slug="ticket-invalid")
        else:
            snap = await self.access.get(space)
            grants.authorize(self.api.maybe_who(request), "listen", snap)
        rec = snap.finished
        if rec is not None:
            if rec.state == EXPIRED or time.time() >= rec.expires_at:
                raise Gone("this recording was kept for its time and is gone",
                           slug="recording-expired")
            return Source(space, "vod", snap, rec, ticket)
        if snap.state == "live":
            return Source(space, "live", snap, None, ticket)
        if snap.state == "scheduled":
            raise Conflict("the Space is not live yet", slug="not-live")
        if snap.recording is True:
            raise NotFound("the recording is not ready yet", slug="recording-not-ready")
        raise NotFound("this Space has ended and has no recording", slug="no-recording")

    async def feed(self, space: str, rendition: Rendition) -> OpusFeed | AacFeed:
        """This node's feed of the Space's rendition, opened (once) on its first request."""
        key = (space, rendition.name)
        feed = self.feeds.get(key)
        if feed is None:
            async with self._opening.setdefault(key, asyncio.Lock()):
                feed = self.feeds.get(key)
                if feed is None:
                    feed = OpusFeed(self.bus, space) if rendition is OPUS \
                        else AacFeed(self.bus, space)
                    await feed.open()
                    self.feeds[key] = feed
            self._opening.pop(key, None)
        if rendition is AAC:
            self.packager.want_live(space)
        feed.used = time.monotonic()
        return feed

    async def index(self, src: Source) -> RecordingIndex:
        """The recording's index, read again only when the recording changed."""
        held = self.indexes.get(src.space)
        if held is None or held[0] != src.tag:
            index = await load_index(self.bus, src.space)
            if index is None:
                raise NotFound("this Space has no recording", slug="no-recording")
            held = (src.tag, index)
            keep(self.indexes, src.space, held)
        return held[1]

    async def aac_index(self, src: Source) -> AacIndex | None:
        """The AAC VOD of this recording, once made (asking for it to be made if not)."""
        held = self.aac_indexes.get(src.space)
        now = time.monotonic()
        if held is None or held[0] != src.tag or (held[2] is None
                                                  and now - held[1] > NOT_READY_S):
            made = await load_aac_index(self.bus, src.space)
            if made is not None and made.tag != src.tag:
                made = None
            held = (src.tag, now, made)
            keep(self.aac_indexes, src.space, held)
            if made is None:
                self.packager.want_vod(src.space)
        return held[2]

    async def renditions(self, src: Source) -> list[Rendition]:
        """The renditions the Space has: Opus, and AAC when live or once its VOD is made."""
        if src.kind == "live" or await self.aac_index(src) is not None:
            return [OPUS, AAC]
        return [OPUS]

    # --- playlists ----------------------------------------------------------------------

    async def playlist(self, src: Source, rendition: Rendition, wanted: Directive | None
                       ) -> tuple[str, str]:
        """(the media playlist, its Cache-Control)."""
        if src.kind == "vod":
            return await self._vod_playlist(src, rendition), VOD_PLAYLIST
        feed = await self.feed(src.space, rendition)
        if wanted is not None:
            if wanted.too_far(feed.newest_end):
                raise BadInput("_HLS_msn/_HLS_part are further ahead than the spec allows "
                               "asking for", slug="bad-hls-directive")
            if not await feed.until(wanted.needed_end(), BLOCK_S):
                raise Unavailable("that part did not appear in time", retry_after=1,
                                  slug="hls-not-ready")
        deadline = time.monotonic() + (FIRST_WAIT_S if rendition is AAC else 0)
        while True:
            state = (feed.newest_end, feed.oldest)
            held = self.playlists.get((src.space, rendition.name))
            if held is not None and held[0] == state:
                return held[1], LIVE_PLAYLIST
            plan = live_playlist(feed.newest_end, feed.oldest, rendition, feed.samples)
            if plan is not None:
                text = plan.render()
                keep(self.playlists, (src.space, rendition.name), (state, text))
                return text, LIVE_PLAYLIST
            if time.monotonic() >= deadline:
                raise NotFound("no audio yet; try again in a moment", slug="no-segments")
            await feed.wait_change(deadline - time.monotonic())

    async def _vod_playlist(self, src: Source, rendition: Rendition) -> str:
        held = self.playlists.get((src.space, rendition.name))
        if held is not None and held[0] == src.tag:
            return held[1]
        plan: Playlist | None
        if rendition is AAC:
            made = await self.aac_index(src)
            if made is None:
                raise NotFound("the AAC rendition is being made; try again in a moment",
                               slug="no-segments")
            plan = Playlist(AAC, made.first, tuple(made.lengths), ended=True)
        else:
            index = await self.index(src)
            plan = vod_playlist(index.first_pts, index.end_pts)
        if plan is None:
            raise NotFound("no audio in this recording", slug="no-segments")
        text = plan.render()
        keep(self.playlists, (src.space, rendition.name), (src.tag, text))
        return text

    # --- segments and parts -------------------------------------------------------------

    async def media(self, src: Source, res: Resource) -> bytes:
        """Segment ``k`` (or its part ``j``) of a rendition, built once per node."""
        j = res.j if res.kind == "part" else None
        key = (src.space, src.tag, res.rendition.name, res.k, j)
        data = self.built.get(key)
        if data is not None:
            self.built.move_to_end(key)
            return data
        if src.kind == "vod":
            data = await self._vod_media(src, res.rendition, res.k, j)
        else:
            feed = await self.feed(src.space, res.rendition)
            lo, hi = segment_bounds(res.k) if j is None else part_bounds(res.k, j)
            if feed.newest_end < hi:
                raise NotFound("this segment is not complete yet", slug="no-segment")
            if lo < feed.oldest:
                raise NotFound("this segment is no longer held", slug="no-segment")
            data = feed.media(res.k, j)
        keep(self.built, key, data)
        return data

    async def _vod_media(self, src: Source, rendition: Rendition, k: int,
                         j: int | None) -> bytes:
        if j is not None:
            raise NotFound("a recording has whole segments only", slug="no-segment")
        if rendition is AAC:
            made = await self.aac_index(src)
            if made is None or not made.first <= k < made.first + len(made.lengths):
                raise NotFound("no such segment", slug="no-segment")
            data = await self.bus.obj_get(BUCKET, aac_segment_name(src.space, k))
            if data is None:
                raise NotFound("no such segment", slug="no-segment")
            return data
        index = await self.index(src)
        lo = k * SEGMENT_SAMPLES
        chunks = await load_chunks(self.bus, src.space,
                                   index.covering(lo - 4800, lo + SEGMENT_SAMPLES))
        packets = packets_between(chunks, *segment_bounds(k))
        if not packets:
            raise NotFound("no such segment", slug="no-segment")
        return media_segment(packets, sequence=k + 1, decode_time=lo)


# --- routes ---------------------------------------------------------------------------

router = APIRouter(tags=["recordings"])


def _ok(media_types: tuple[str, ...], what: str, *more: int
        ) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {t: {} for t in media_types}, "description": what}} | problems(
        401, 403, 404, 409, 410, *more)


def _answer(body: bytes | str, media_type: str, cache: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"Cache-Control": cache, "Access-Control-Allow-Origin": "*",
                             "Vary": "Authorization"})


def _origin(request: Request) -> HlsOrigin:
    origin: HlsOrigin = request.app.state.hls
    return origin


@router.get("/hls/{space}/master.m3u8", response_class=Response, responses=_ok(
    (M3U8,), "the multivariant playlist: Opus, and AAC-LC (mp4a.40.2)"))
async def master_playlist_route(space: str, request: Request, t: Ticket = None
                                ) -> Response:
    """The multivariant playlist: one variant per rendition (Opus; AAC-LC for players
    without Opus, live at once, after the end once it is made)."""
    hls = _origin(request)
    src = await hls.source(space, request, t)
    text = src.carry(master_playlist(await hls.renditions(src)))
    cache = VOD_PLAYLIST if src.kind == "vod" else LIVE_PLAYLIST
    return _answer(text, M3U8, src.cache(cache))


@router.get("/hls/{space}/{name}", response_class=Response, responses=_ok(
    (M3U8, MP4), "a media playlist (index.m3u8 = opus.m3u8: Opus, live then VOD ending "
    "#EXT-X-ENDLIST; aac.m3u8), an init segment (init.mp4, "
    "aac-init.mp4), a 2 s segment (<k>.m4s, aac-<k>.m4s) or a 0.5 s part (<k>.<j>.m4s)",
    400, 503))
async def hls_resource(
        space: str, name: str, request: Request,
        msn: Annotated[str | None, Query(
            alias="_HLS_msn", description="media playlists: block until this segment is "
            "listed (LL-HLS)")] = None,
        part: Annotated[str | None, Query(
            alias="_HLS_part", description="...or until this part (0-3) of it is")] = None,
        t: Ticket = None,
) -> Response:
    """A media playlist (``_HLS_msn``/``_HLS_part`` block until that part exists, up to
    6 s), an init segment, a segment or a part: fMP4, never re-encoded for Opus."""
    hls = _origin(request)
    res = parse_name(name)
    if res is None:
        raise NotFound("no such segment", slug="no-segment")
    wanted = directive(msn, part) if res.kind == "playlist" else None
    src = await hls.source(space, request, t)
    if res.kind == "playlist":
        text, cache = await hls.playlist(src, res.rendition, wanted)
        response = _answer(src.carry(text), M3U8, src.cache(cache))
        if src.kind == "vod":
            hls.remember(request, src, response)
        return response
    immutable = src.cache(IMMUTABLE)
    if res.kind == "init":
        response = _answer(INITS[res.rendition.name], MP4, immutable)
    else:
        response = _answer(await hls.media(src, res), MP4, immutable)
    hls.remember(request, src, response)
    return response


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /hls on ``app``."""
    origin = HlsOrigin(ctx, app.state.api, app.state.recordings.tickets)
    app.state.hls = origin
    app.state.api.before_expire.append(origin.packager.drop)
    ctx.on_start.append(origin.start)
    ctx.on_stop.append(origin.stop)
    app.include_router(router)
    origin.route = next((r for r in app.router.routes
                         if getattr(r, "path", "") == "/hls/{space}/{name}"), None)
    app.add_middleware(FastPath)
