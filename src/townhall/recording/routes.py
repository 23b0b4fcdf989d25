"""Routes of recordings: the replay file and its timeline, signed links for private
replays, deleting a recording, clips. Runs the recorder and the expiry sweep too.

Files are built once (by the recorder, or when a clip is made) and stored in the
``recordings`` object store; each api node keeps a copy on its disk, named by the file's
ETag, and serves it with Range. Who may hear a recording is who may listen to the Space
(townhall.grants), asked on every request against the current snapshot, so a deletion or
a private Space's roster applies on every node at once; ``?t=<ticket>`` (a short-lived
signed link, townhall.recording.tickets) stands in for the bearer token where ``<audio>``
cannot send one. Recordings past ``--recording-days`` are deleted by a periodic sweep
(townhall.recording.retention) and answer 410.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import Counter
from pydantic import Field

from townhall import grants
from townhall.api.models import Strict
from townhall.api.role import Api
from townhall.api.schemas import Open, Snapshot, problems
from townhall.bus import subjects
from townhall.bus.bus import CasConflict
from townhall.context import Context
from townhall.media.chunk import SAMPLE_RATE, Chunk
from townhall.media.recording import (
    PEAK_BUCKET_S,
    clip_m4a,
    cut_clip,
    ogg_file,
    reaction_curve,
    reaction_peaks,
    speaker_spans,
)
from townhall.problems import BadInput, Conflict, Gone, NotFound, Unauthorized, Unprocessable
from townhall.recording.recorder import (
    BUCKET,
    Recorder,
    clip_name,
    delete_recording,
    levels_name,
    load_chunks,
    load_index,
    replay_name,
)
from townhall.recording.retention import EXPIRED, due, is_due, keep_copy
from townhall.recording.tickets import MAX_TTL_S, TTL_S, Tickets, recording_tag
from townhall.room.rules import is_space_id
from townhall.room.snapshot import Recording, Space, from_doc, public_view

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
CLIPS_LIMIT = 500           # clips kept per Space
LIVE_CLIP_WINDOW_S = 55.0   # of a live Space without a recording: what MEDIA still holds
OGG = "audio/ogg"
FORMATS = {"opus": OGG, "m4a": "audio/mp4"}
SWEEP_EVERY_S = 60.0
SWEEP_LEASE = "sweep"       # key in the recorders bucket: one node sweeps at a time
SWEEP_BATCH = 100

SWEPT = Counter("townhall_recordings_expired_total",
                "Recordings deleted by the sweep after --recording-days")

Ticket = Annotated[str | None, Query(
    max_length=80, description="a signed link's ticket (POST .../recording/ticket), for "
    "players that cannot send Authorization")]


class ClipIn(Strict):
    """A clip to make: ``duration`` seconds from ``start`` on the Space's timeline."""

    start: float = Field(ge=0, le=7 * 86400, description="seconds from the Space's start")
    duration: float = Field(gt=0, le=60, description="seconds, at most 60")


class ClipOut(Open):
    """A clip made: its id and where its files and share page are."""

    id: str
    url: str = Field(description="the clip as Ogg/Opus, /clips/<id>.opus")
    m4a: str = Field(description="the clip as Opus in MP4, /clips/<id>.m4a")
    page: str = Field(description="its share page, /c/<id> (Open Graph tags)")
    duration: float


class TicketOut(Open):
    """A signed link to a recording: the URLs that carry the ticket, and when it expires."""

    ticket: str
    expires_at: float = Field(description="unix seconds; mint another after that")
    url: str = Field(description="/replay/<id>.opus?t=<ticket>")
    m4a: str
    timeline: str
    hls: str = Field(description="/hls/<id>/master.m3u8?t=<ticket>: the playlists carry "
                     "the ticket on to every URI they list")
    hls_opus: str = Field(description="/hls/<id>/index.m3u8?t=<ticket>, the Opus playlist")


class FileCache:
    """Files of the object store, copied once to this node's disk."""

    def __init__(self, ctx: Context) -> None:
        self.bus = ctx.bus
        self.root = ctx.settings.data_dir / "replay-cache"
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, name: str, tag: str) -> Path | None:
        """The local copy of object ``name`` at version ``tag``; None if it has none."""
        local = self.root / f"{name.replace('/', '_')}.{tag}"
        if local.exists():
            return local
        lock = self._locks.setdefault(str(local), asyncio.Lock())
        async with lock:
            if local.exists():
                return local
            self.root.mkdir(parents=True, exist_ok=True)
            part = local.with_suffix(f".part{secrets.token_hex(4)}")
            try:
                with part.open("wb") as out:
                    found = await self.bus.obj_get_into(BUCKET, name, out)
                if not found:
                    return None
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)
                self._locks.pop(str(local), None)
        return local

    def forget(self, space: str) -> None:
        """Drop this node's copies of a Space's files."""
        if self.root.exists():
            for f in self.root.glob(f"{space}_*"):
                f.unlink(missing_ok=True)

    def sweep(self, keep: Callable[[str], bool]) -> int:
        """Drop the copies of every Space ``keep`` says no to; returns how many."""
        if not self.root.exists():
            return 0
        gone = 0
        for f in self.root.iterdir():
            if ".part" not in f.name and not keep(f.name.split("_", 1)[0]):
                f.unlink(missing_ok=True)
                gone += 1
        return gone


def restricted(snap: Space) -> bool:
    """Whether listening needs a token: then no shared cache (CDN) may keep the audio."""
    return snap.private or snap.signed_in_only


def cache_control(value: str, snap: Space) -> str:
    """``value`` (a Cache-Control) made ``private`` when listening needs a token."""
    return value.replace("public", "private") if restricted(snap) else value


def _serve(request: Request, path: Path, etag: str, filename: str,
           snap: Space, media_type: str = OGG) -> Response:
    headers = {"ETag": etag, "Cache-Control": cache_control(IMMUTABLE, snap),
               "Accept-Ranges": "bytes",
               "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers, filename=filename,
                        content_disposition_type="inline")


def finished(snap: Space, now: float) -> Recording:
    """The Space's finished recording, or the refusal that says why there is none."""
    if snap.recording is True:
        raise NotFound("the recording is not ready yet (the Space is live, or it ended "
                       "moments ago)", slug="recording-not-ready")
    rec = snap.finished
    if rec is None:
        raise NotFound("this Space has no recording", slug="no-recording")
    if rec.state == EXPIRED or now >= rec.expires_at:
        raise Gone("this recording was kept for its time and is gone",
                   slug="recording-expired")
    return rec


class Recordings:
    """What the recording routes of one process share: the recorder, the disk copies,
    the ticket key, timelines already built, and the sweep."""

    def __init__(self, api: Api, ctx: Context) -> None:
        self.api = api
        self.bus = ctx.bus
        self.node = ctx.settings.node_id
        self.keep_s = ctx.settings.recording_days * 86400
        self.recorder = Recorder(ctx.bus, api.store, ctx.settings.node_id,
                                 ctx.settings.recording_days)
        self.cache = FileCache(ctx)
        self.tickets = Tickets(ctx.issuer.derive_key("replay"))
        self.timelines: dict[str, tuple[str, dict[str, Any]]] = {}
        self._purging: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the expiry sweep."""
        self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def stop(self) -> None:
        """Stop the expiry sweep."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def listenable(self, space: str, request: Request,
                         ticket: str | None) -> Space:
        """The Space's document if the caller may hear its recording: by a ticket for
        this Space and recording (checked before any lookup), else by townhall.grants."""
        if not is_space_id(space):
            raise NotFound(f"no Space {space}", slug="space-not-found")
        if ticket is None:
            return await self.api.authorized(space, self.api.maybe_who(request), "listen")
        tag = self.tickets.check(ticket, space, now=time.time())
        snap = await self.api.store.get(space)
        if tag != recording_tag(snap):
            raise Unauthorized("this link was made for an earlier state of the recording: "
                               "open the page again", slug="ticket-invalid")
        return snap

    async def purge(self, space: str, clips: list[str]) -> None:
        """Delete a recording's objects (idempotent) and this node's copies."""
        if space in self._purging:
            return
        self._purging.add(space)
        try:
            await delete_recording(self.bus, space, clips)
            self.cache.forget(space)
            self.timelines.pop(space, None)
        finally:
            self._purging.discard(space)

    async def before_expire(self, space: str) -> None:
        """The Space document is about to go (retention): its recording goes first."""
        with contextlib.suppress(NotFound):
            snap = await self.api.store.get(space)
            if snap.finished is not None:
                await self.purge(space, list(snap.clips))

    async def timeline(self, snap: Space, rec: Recording) -> dict[str, Any]:
        """Who spoke when and where the reactions peaked, built once per recording."""
        space, view = snap.id, public_view(snap)
        tag = str(rec.ready_at)
        held = self.timelines.get(space)
        if held is not None and held[0] == tag:
            return held[1]
        index = await load_index(self.bus, space)
        if index is None:
            raise NotFound("this Space has no recording", slug="no-recording")
        reports: list[dict[str, Any]] = []
        for n in index.levels:
            raw = await self.bus.obj_get(BUCKET, levels_name(space, n))
            with contextlib.suppress(ValueError, TypeError):
                reports += [r for r in json.loads(raw or b"[]") if isinstance(r, dict)]
        curve = reaction_curve(index, reports)
        names = {p.id: p.name for p in snap.stage}
        names[snap.host.id] = snap.host.name
        built = {"duration": rec.duration, "offset": index.first_pts / SAMPLE_RATE,
                 "speakers": speaker_spans(index, reports), "host": view["host"],
                 "names": names, "reactions": view["reactions"], "bucket": PEAK_BUCKET_S,
                 "curve": [sum(b.values()) for b in curve],
                 "peaks": reaction_peaks(curve)}
        self.timelines[space] = (tag, built)
        return built

    async def clip_material(self, snap: Space, start: int, end: int) -> list[Chunk]:
        """The chunks around [start, end): the recording's, and while live what the MEDIA
        stream still holds."""
        space = snap.id
        chunks: dict[int, Chunk] = {}
        index = await load_index(self.bus, space)
        if index is not None:
            for c in await load_chunks(self.bus, space, index.covering(start - 48_000, end)):
                chunks[c.seq] = c
        if snap.state == "live":
            for msg in await self.bus.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                             since_s=LIVE_CLIP_WINDOW_S, limit=1000):
                with contextlib.suppress(BadInput):
                    c = Chunk.decode(msg.data)
                    chunks.setdefault(c.seq, c)
        return [chunks[s] for s in sorted(chunks)]

    # --- the expiry sweep ----------------------------------------------------------------

    def _view(self, space: str) -> Space | None:
        item = self.api.index.get(space)
        return from_doc(item.view) if item is not None else None

    async def sweep_once(self, now: float) -> int:
        """Delete the recordings past their time and mark them expired; returns how many.
        One node at a time holds the sweep lease; the deletes are idempotent and the
        marking a compare-and-set, so a node that sweeps after the lease lapsed only
        repeats harmless work. Every node also drops its own stale disk copies."""
        if self.api.listing_ready:
            self.cache.sweep(lambda space: keep_copy(self._view(space), now))
        # A recording's Space stays in the index's expiry order from expires_at on.
        index = self.api.index
        views = [v for sid, _ in index.expired(now, limit=len(index) + 1)
                 if (v := self._view(sid)) is not None]
        spaces = due(views, now, limit=SWEEP_BATCH)
        if not spaces:
            return 0
        try:
            await self.bus.kv_create(subjects.RECORDERS_BUCKET, SWEEP_LEASE, self.node.encode())
        except CasConflict:
            return 0  # another node sweeps now
        done = 0
        try:
            for space in spaces:
                done += await self._expire(space, now)
        finally:
            with contextlib.suppress(Exception):
                await self.bus.kv_delete(subjects.RECORDERS_BUCKET, SWEEP_LEASE)
        return done

    async def _expire(self, space: str, now: float) -> int:
        try:
            doc = await self.api.store.get(space)
        except NotFound:
            return 0
        if not is_due(doc, now):
            return 0
        await self.purge(space, list(doc.clips))

        def mark(s: Space) -> Space:
            if s.finished is None or not is_due(s, now):
                return s
            # The clips' ids stay: asked for, they answer 410 like the recording.
            s.finished.state, s.finished.expired_at = EXPIRED, now
            return s

        with contextlib.suppress(NotFound):
            await self.api.store.mutate(space, mark)
        SWEPT.inc()
        log.info("recording expired and deleted", extra={"space": space})
        return 1

    async def _sweep_loop(self) -> None:
        every = min(SWEEP_EVERY_S, max(0.5, self.keep_s / 4))
        while True:
            await asyncio.sleep(every)
            try:
                while await self.sweep_once(time.time()) >= SWEEP_BATCH:
                    pass  # a backlog: go on
            except Exception:
                log.exception("the recording sweep failed")


def _of(request: Request) -> Recordings:
    recordings: Recordings = request.app.state.recordings
    return recordings


def _audio(*errors: int) -> dict[str, Any]:
    return {"response_class": Response, "responses": {
        200: {"content": {OGG: {}, "audio/mp4": {}},
              "description": "Ogg/Opus (or Opus in MP4); Range answers 206"},
        206: {"description": "the requested bytes"},
        304: {"description": "unchanged since If-None-Match"}} | problems(*errors)}


router = APIRouter(tags=["recordings"])


@router.get("/replay/{name}", **_audio(401, 403, 404, 410))
async def replay(name: str, request: Request, t: Ticket = None) -> Response:
    """The finished recording as one seekable file: ``<id>.opus`` (Ogg/Opus) or
    ``<id>.m4a`` (Opus in MP4, index first); Range, ETag, cached."""
    r = _of(request)
    space, _, ext = name.partition(".")
    if ext not in FORMATS or not is_space_id(space):
        raise NotFound("no such recording", slug="no-recording")
    snap = await r.listenable(space, request, t)
    rec = finished(snap, time.time())
    if ext == "m4a" and rec.m4a is None:
        raise NotFound("this recording has no .m4a", slug="no-recording")
    tag = f"{int(rec.ready_at * 1000)}-{rec.bytes}"
    path = await r.cache.path(replay_name(space, ext), tag)
    if path is None:
        raise NotFound("this Space has no recording", slug="no-recording")
    return _serve(request, path, f'"{space}-{ext}-{tag}"', name, snap, FORMATS[ext])


@router.get("/replay/{space}/timeline.json", response_model=None,
            responses=problems(401, 403, 404, 410))
async def timeline(space: str, request: Request, t: Ticket = None) -> dict[str, Any]:
    """Who spoke when in the replay (from the stage's levels, kept with the recording) and
    where the reactions peaked: ``{"duration", "offset", "speakers": [{"id", "from",
    "to"}], "names", "reactions", "bucket", "curve", "peaks": [{"at", "count",
    "emoji"}]}`` (seconds of the replay; ``offset`` is where it starts in the Space)."""
    r = _of(request)
    snap = await r.listenable(space, request, t)
    return await r.timeline(snap, finished(snap, time.time()))


@router.post("/api/v1/spaces/{space}/recording/ticket", response_model=TicketOut,
             responses=problems(401, 403, 404, 429))
async def ticket(space: str, request: Request, ttl: Annotated[int, Query(
        ge=60, le=MAX_TTL_S, description="seconds the link works: a live HLS player "
        "reloads its playlist with the same link for as long as it listens")] = TTL_S,
                 ) -> dict[str, Any]:
    """A signed link to the recording, its clips and its HLS for a player that cannot
    send a token (``<audio src>``, a player given an HLS URL): anyone who may listen gets
    one; it expires in ``ttl`` seconds (10 minutes unless asked, an hour at most)."""
    r = _of(request)
    ident = r.api.who(request)
    r.api.limit(ident)
    if not is_space_id(space):
        raise NotFound(f"no Space {space}", slug="space-not-found")
    snap = await r.api.authorized(space, ident, "listen")
    t, expires = r.tickets.mint(space, recording_tag(snap), now=time.time(), ttl=ttl)
    return {"ticket": t, "expires_at": expires, "url": f"/replay/{space}.opus?t={t}",
            "m4a": f"/replay/{space}.m4a?t={t}",
            "timeline": f"/replay/{space}/timeline.json?t={t}",
            "hls": f"/hls/{space}/master.m3u8?t={t}",
            "hls_opus": f"/hls/{space}/index.m3u8?t={t}"}


_deleted: dict[int | str, dict[str, Any]] = {
    200: {"model": Snapshot, "description": "the snapshot, recording false"}}


@router.delete("/api/v1/spaces/{space}/recording", response_model=None,
               responses=_deleted | problems(401, 403, 404, 409, 429, 503))
async def delete(space: str, request: Request) -> dict[str, Any]:
    """Delete the recording and its clips (host only), on every node."""
    r = _of(request)
    ident = r.api.who(request)
    r.api.limit(ident)
    clips: list[str] = []

    def change(s: Space) -> Space:
        grants.authorize(ident, "host", s)
        if s.state != "ended":
            raise Conflict("the Space is not over: stop recording with the "
                           "record_off action", slug="not-ended")
        if s.recording is False:
            raise NotFound("this Space has no recording", slug="no-recording")
        clips.extend(s.clips)
        s.recording, s.clips, s.record_spans = False, [], []
        s.recording_deleted = time.time()
        return s

    snap = await r.api.store.mutate(space, change)
    await r.purge(space, clips)
    return public_view(snap)


_clip_answers: dict[int | str, dict[str, Any]] = {
    201: {"model": ClipOut, "description": "the clip"}}


def _held(chunks: list[Chunk]) -> str:
    if not chunks:
        return "nowhere (nothing recorded)"
    return (f"{chunks[0].pts / SAMPLE_RATE:.1f} s to "
            f"{(chunks[-1].pts + chunks[-1].duration_samples) / SAMPLE_RATE:.1f} s")


@router.post("/api/v1/spaces/{space}/clips", status_code=201, response_model=None,
             responses=_clip_answers | problems(400, 401, 403, 404, 409, 410, 413, 422,
                                                429, 503))
async def clip(space: str, request: Request, body: ClipIn) -> dict[str, Any]:
    """Cut a clip (host, co-hosts and speakers while live; the host after the end), as
    Ogg/Opus and as Opus in MP4, from the recording's packets (no re-encoding)."""
    r = _of(request)
    ident = r.api.who(request)
    r.api.limit(ident)
    snap = await r.api.authorized(space, ident, "clip")
    if snap.state == "scheduled":
        raise Conflict("the Space has not started", slug="not-live")
    if snap.state == "ended":
        finished(snap, time.time())
    start = round(body.start * SAMPLE_RATE)
    samples = max(round(body.duration * SAMPLE_RATE), 1)
    chunks = await r.clip_material(snap, start, start + samples)
    try:
        cut = cut_clip(chunks, start, samples)
    except BadInput as exc:
        raise Unprocessable(f"{exc.detail}: the Space has audio from "
                            f"{_held(chunks)}", slug="clip-outside") from exc
    built = ogg_file(cut.packets, pre_skip=cut.pre_skip, end_trim=cut.end_trim)
    clip_id = f"{space}-{secrets.token_hex(5)}"
    await r.bus.obj_put(BUCKET, clip_name(space, clip_id), built.data)
    await r.bus.obj_put(BUCKET, clip_name(space, clip_id, "m4a"), clip_m4a(cut))

    def remember(s: Space) -> Space:
        s.clips = [*s.clips, clip_id][-CLIPS_LIMIT:]
        return s

    await r.api.store.mutate(space, remember)
    return {"id": clip_id, "url": f"/clips/{clip_id}.opus", "m4a": f"/clips/{clip_id}.m4a",
            "page": f"/c/{clip_id}", "duration": round(built.duration_s, 3)}


@router.get("/clips/{name}", **_audio(401, 403, 404, 410))
async def get_clip(name: str, request: Request, t: Ticket = None) -> Response:
    """A clip as Ogg/Opus (``.opus``) or Opus in MP4 (``.m4a``); Range, ETag, cached."""
    r = _of(request)
    clip_id, _, ext = name.rpartition(".")
    space, _, _ = clip_id.partition("-")
    if ext not in FORMATS or not is_space_id(space):
        raise NotFound("no such clip", slug="no-clip")
    snap = await r.listenable(space, request, t)
    if clip_id not in snap.clips:
        raise NotFound("no such clip", slug="no-clip")
    if snap.finished is not None:
        finished(snap, time.time())  # clips go when their recording goes
    path = await r.cache.path(clip_name(space, clip_id, ext), "1")
    if path is None:
        raise NotFound("no such clip", slug="no-clip")
    return _serve(request, path, f'"{clip_id}-{ext}"', name, snap, FORMATS[ext])


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /replay, /clips and the recording routes; run the recorder and the sweep."""
    recordings = Recordings(app.state.api, ctx)
    app.state.recordings = recordings
    ctx.on_start += [recordings.recorder.start, recordings.start]
    ctx.on_stop += [recordings.stop, recordings.recorder.stop]
    app.state.api.before_expire.append(recordings.before_expire)
    app.include_router(router)
