"""HLS routes: ``/hls/<id>/index.m3u8``, ``init.mp4`` and ``<k>.m4s`` (fMP4/CMAF Opus).

While a Space is live, any api node answers from NATS: on the first request it follows the
Space's chunks (the last minute from JetStream, then live) and builds 2 s segments from
them. After a recorded Space's recording is ready, the same URLs serve the whole recording
(VOD, ``#EXT-X-ENDLIST``) from the object store. Segments never change once listed:
``immutable``; playlists are short-lived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from townhall.api.schemas import problems
from townhall.bus import subjects
from townhall.bus.bus import Bus, Message, Subscription
from townhall.context import Context
from townhall.media.chunk import Chunk
from townhall.media.fmp4 import init_segment, media_segment
from townhall.media.hls import (
    SEGMENT_SAMPLES,
    live_playlist,
    segment_packets,
    vod_playlist,
)
from townhall.media.recording import RecordingIndex
from townhall.problems import BadInput, Conflict, Gone, NotFound
from townhall.recording.plugin import cache_control
from townhall.recording.recorder import load_chunks, load_index
from townhall.room.rules import is_space_id

IMMUTABLE = "public, max-age=31536000, immutable"
LIVE_PLAYLIST = "public, max-age=1"
VOD_PLAYLIST = "public, max-age=30"
M3U8 = "application/vnd.apple.mpegurl"
MP4 = "video/mp4"  # CMAF segments; audio-only players take it alike
HOLD_S = 60.0      # of a live Space: chunks kept per node (what MEDIA holds)
IDLE_S = 60.0      # a live feed nobody asked for this long is closed
INIT = init_segment()


class LiveFeed:
    """One Space's recent chunks on this node, from NATS."""

    def __init__(self, bus: Bus, space: str) -> None:
        self.bus = bus
        self.space = space
        self.chunks: dict[int, Chunk] = {}
        self.used = time.monotonic()
        self._sub: Subscription | None = None

    async def open(self) -> None:
        self._sub = await self.bus.subscribe(subjects.media(self.space), self._on_chunk)
        for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(self.space),
                                         since_s=HOLD_S, limit=1000):
            self._add(msg)

    async def _on_chunk(self, msg: Message) -> None:
        self._add(msg)

    def _add(self, msg: Message) -> None:
        with contextlib.suppress(BadInput):
            chunk = Chunk.decode(msg.data)
            self.chunks[chunk.seq] = chunk
            newest = self.newest_end_pts
            limit = newest - int(HOLD_S * 48_000)
            for seq in [s for s, c in self.chunks.items() if c.pts < limit]:
                del self.chunks[seq]

    @property
    def newest_end_pts(self) -> int:
        return max((c.pts + c.duration_samples for c in self.chunks.values()), default=0)

    @property
    def oldest_pts(self) -> int:
        return min((c.pts for c in self.chunks.values()), default=0)

    def ordered(self) -> list[Chunk]:
        return [self.chunks[s] for s in sorted(self.chunks)]

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /hls on ``app``."""
    api = app.state.api
    feeds: dict[str, LiveFeed] = {}
    opening: dict[str, asyncio.Lock] = {}
    indexes: dict[str, tuple[str, RecordingIndex]] = {}
    segments: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
    router = APIRouter(tags=["recordings"])
    reaper: list[asyncio.Task[None]] = []

    async def reap() -> None:
        while True:
            await asyncio.sleep(10)
            now = time.monotonic()
            for space, feed in list(feeds.items()):
                if now - feed.used > IDLE_S:
                    feeds.pop(space, None)
                    await feed.close()

    async def start() -> None:
        reaper.append(asyncio.ensure_future(reap()))

    async def stop() -> None:
        for task in reaper:
            task.cancel()
        for feed in list(feeds.values()):
            await feed.close()

    ctx.on_start.append(start)
    ctx.on_stop.append(stop)

    async def feed_of(space: str) -> LiveFeed:
        feed = feeds.get(space)
        if feed is None:
            async with opening.setdefault(space, asyncio.Lock()):
                feed = feeds.get(space)
                if feed is None:
                    feed = LiveFeed(ctx.bus, space)
                    await feed.open()
                    feeds[space] = feed
            opening.pop(space, None)
        feed.used = time.monotonic()
        return feed

    async def source(space: str, request: Request
                     ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """("vod", recording, snapshot) or ("live", {}, snapshot) for a Space this caller
        may listen to."""
        if not is_space_id(space):
            raise NotFound(f"no Space {space}", slug="space-not-found")
        snap = await api.authorized(space, api.maybe_who(request), "listen")
        rec = snap.get("recording")
        if isinstance(rec, dict):
            if time.time() >= float(rec.get("expires_at", 0)):
                raise Gone("this recording was kept for its time and is gone",
                           slug="recording-expired")
            return "vod", rec, snap
        if snap["state"] == "live":
            return "live", {}, snap
        if snap["state"] == "scheduled":
            raise Conflict("the Space is not live yet", slug="not-live")
        if rec is True:
            raise NotFound("the recording is not ready yet", slug="recording-not-ready")
        raise NotFound("this Space has ended and has no recording", slug="no-recording")

    async def index_of(space: str, rec: dict[str, Any]) -> tuple[str, RecordingIndex]:
        tag = f"{int(float(rec['ready_at']) * 1000)}"
        held = indexes.get(space)
        if held is None or held[0] != tag:
            index = await load_index(ctx.bus, space)
            if index is None:
                raise NotFound("this Space has no recording", slug="no-recording")
            held = indexes[space] = (tag, index)
        return held

    def ok(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
        return {200: {"content": {media_type: {}}, "description": what}} | problems(
            401, 403, 404, 409, 410)

    def answer(body: bytes | str, media_type: str, cache: str) -> Response:
        return Response(body, media_type=media_type,
                        headers={"Cache-Control": cache, "Access-Control-Allow-Origin": "*",
                                 "Vary": "Authorization"})

    @router.get("/hls/{space}/index.m3u8", response_class=Response, responses=ok(
        M3U8, "live, or VOD after a recorded end"))
    async def playlist(space: str, request: Request) -> Response:
        """The HLS media playlist: live (a sliding window), or the recording (VOD)."""
        kind, rec, snap = await source(space, request)
        if kind == "vod":
            _, index = await index_of(space, rec)
            plan = vod_playlist(index.first_pts, index.end_pts)
            cache = VOD_PLAYLIST
        else:
            feed = await feed_of(space)
            plan = live_playlist(feed.newest_end_pts, feed.oldest_pts)
            cache = LIVE_PLAYLIST
        if plan is None:
            raise NotFound("no audio yet; try again in a moment", slug="no-segments")
        return answer(plan.render(), M3U8, cache_control(cache, snap))

    @router.get("/hls/{space}/init.mp4", response_class=Response, responses=ok(
        MP4, "the fMP4 init segment"))
    async def init(space: str, request: Request) -> Response:
        """The init segment (the same for every Space)."""
        _, _, snap = await source(space, request)
        return answer(INIT, MP4, cache_control(IMMUTABLE, snap))

    @router.get("/hls/{space}/{name}", response_class=Response, responses=ok(
        MP4, "2 s of Opus in fMP4"))
    async def segment(space: str, name: str, request: Request) -> Response:
        """Media segment ``k`` (``<k>.m4s``): the packets of 2 s, never re-encoded."""
        number = name.removesuffix(".m4s")
        if not name.endswith(".m4s") or not number.isdigit() or len(number) > 9:
            raise NotFound("no such segment", slug="no-segment")
        k = int(number)
        kind, rec, snap = await source(space, request)
        immutable = cache_control(IMMUTABLE, snap)
        if kind == "vod":
            tag, index = await index_of(space, rec)
            key = (space, tag, k)
            data = segments.get(key)
            if data is None:
                lo = k * SEGMENT_SAMPLES
                chunks = await load_chunks(ctx.bus, space,
                                           index.covering(lo - 4800, lo + SEGMENT_SAMPLES))
                packets = segment_packets(chunks, k)
                if not packets:
                    raise NotFound("no such segment", slug="no-segment")
                data = media_segment(packets, sequence=k + 1,
                                     decode_time=k * SEGMENT_SAMPLES)
                segments[key] = data
                while len(segments) > 256:
                    segments.popitem(last=False)
            return answer(data, MP4, immutable)
        key = (space, "live", k)
        data = segments.get(key)
        if data is None:
            feed = await feed_of(space)
            if feed.newest_end_pts < (k + 1) * SEGMENT_SAMPLES:
                raise NotFound("this segment is not complete yet", slug="no-segment")
            packets = segment_packets(feed.ordered(), k)
            if not packets or k * SEGMENT_SAMPLES < feed.oldest_pts:
                raise NotFound("this segment is no longer held", slug="no-segment")
            data = segments[key] = media_segment(packets, sequence=k + 1,
                                                 decode_time=k * SEGMENT_SAMPLES)
            while len(segments) > 256:
                segments.popitem(last=False)
        return answer(data, MP4, immutable)

    app.include_router(router)
