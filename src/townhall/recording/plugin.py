"""Routes of recordings: the replay file, deleting it, clips. Runs the recorder too.

Files are built once (by the recorder, or when a clip is made) and stored in the
``recordings`` object store; each api node keeps a copy on its disk, named by the file's
ETag, and serves it with Range. Who may hear a recording is who may listen to the Space
(townhall.grants), asked on every request against the current snapshot, so a deletion or
a private Space's roster applies on every node at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from pydantic import Field

from townhall import grants
from townhall.api.models import Strict
from townhall.api.schemas import Open, Snapshot, problems
from townhall.bus import subjects
from townhall.context import Context
from townhall.media.chunk import SAMPLE_RATE, Chunk
from townhall.media.recording import clip_file, speaker_spans
from townhall.problems import BadInput, Conflict, Gone, NotFound, Unprocessable
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
from townhall.room.rules import is_space_id
from townhall.room.snapshot import public_view

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
CLIPS_LIMIT = 500           # clips kept per Space
LIVE_CLIP_WINDOW_S = 55.0   # of a live Space without a recording: what MEDIA still holds
OGG = "audio/ogg"
FORMATS = {"opus": OGG, "m4a": "audio/mp4"}


class ClipIn(Strict):
    start: float = Field(ge=0, le=7 * 86400, description="seconds from the Space's start")
    duration: float = Field(gt=0, le=60, description="seconds, at most 60")


class ClipOut(Open):
    id: str
    url: str
    duration: float


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


def restricted(snap: dict[str, Any]) -> bool:
    """Whether listening needs a token: then no shared cache (CDN) may keep the audio."""
    return bool(snap.get("private") or snap.get("signed_in_only"))


def cache_control(value: str, snap: dict[str, Any]) -> str:
    return value.replace("public", "private") if restricted(snap) else value


def _serve(request: Request, path: Path, etag: str, filename: str,
           snap: dict[str, Any], media_type: str = OGG) -> Response:
    headers = {"ETag": etag, "Cache-Control": cache_control(IMMUTABLE, snap),
               "Accept-Ranges": "bytes",
               "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers, filename=filename,
                        content_disposition_type="inline")


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /replay, /clips and the recording routes; run the recorder."""
    api = app.state.api
    recorder = Recorder(ctx.bus, api.store, ctx.settings.node_id, ctx.settings.recording_days)
    ctx.on_start.append(recorder.start)
    ctx.on_stop.append(recorder.stop)
    cache = FileCache(ctx)
    purging: set[str] = set()
    background: set[asyncio.Future[None]] = set()
    router = APIRouter(tags=["recordings"])

    def audio(*errors: int) -> dict[str, Any]:
        return {"response_class": Response, "responses": {
            200: {"content": {OGG: {}, "audio/mp4": {}},
                  "description": "Ogg/Opus (or Opus in MP4); Range answers 206"},
            206: {"description": "the requested bytes"},
            304: {"description": "unchanged since If-None-Match"}} | problems(*errors)}

    async def purge(space: str, clips: list[str]) -> None:
        if space in purging:
            return
        purging.add(space)
        try:
            await delete_recording(ctx.bus, space, clips)
            cache.forget(space)
        finally:
            purging.discard(space)

    async def before_expire(space: str) -> None:
        """The Space document is about to go (retention): its recording goes first."""
        with contextlib.suppress(NotFound):
            snap = await api.store.get(space)
            if isinstance(snap.get("recording"), dict):
                await purge(space, list(snap.get("_clips", [])))

    api.before_expire.append(before_expire)

    def finished(snap: dict[str, Any]) -> dict[str, Any]:
        """The Space's finished recording, or the refusal that says why there is none."""
        rec = snap.get("recording")
        if rec is True:
            raise NotFound("the recording is not ready yet (the Space is live, or it ended "
                           "moments ago)", slug="recording-not-ready")
        if not isinstance(rec, dict):
            cache.forget(snap["id"])
            raise NotFound("this Space has no recording", slug="no-recording")
        if time.time() >= float(rec.get("expires_at", 0)):
            task = asyncio.ensure_future(purge(snap["id"], list(snap.get("_clips", []))))
            background.add(task)
            task.add_done_callback(background.discard)
            raise Gone("this recording was kept for its time and is gone",
                       slug="recording-expired")
        return rec

    @router.get("/replay/{name}", **audio(401, 403, 404, 410))
    async def replay(name: str, request: Request) -> Response:
        """The finished recording as one seekable file: ``<id>.opus`` (Ogg/Opus) or
        ``<id>.m4a`` (Opus in MP4, index first); Range, ETag, cached."""
        space, _, ext = name.partition(".")
        if ext not in FORMATS or not is_space_id(space):
            raise NotFound("no such recording", slug="no-recording")
        snap = await api.authorized(space, api.maybe_who(request), "listen")
        rec = finished(snap)
        if ext == "m4a" and "m4a" not in rec:
            raise NotFound("this recording has no .m4a", slug="no-recording")
        tag = f"{int(float(rec['ready_at']) * 1000)}-{rec['bytes']}"
        path = await cache.path(replay_name(space, ext), tag)
        if path is None:
            raise NotFound("this Space has no recording", slug="no-recording")
        return _serve(request, path, f'"{space}-{ext}-{tag}"', name, snap, FORMATS[ext])

    timelines: dict[str, tuple[str, dict[str, Any]]] = {}

    @router.get("/replay/{space}/timeline.json", response_model=None,
                responses=problems(401, 403, 404, 410))
    async def timeline(space: str, request: Request) -> dict[str, Any]:
        """Who spoke when in the replay (from the stage's levels, kept with the recording):
        ``{"duration", "speakers": [{"id", "from", "to"}], "reactions"}``."""
        if not is_space_id(space):
            raise NotFound(f"no Space {space}", slug="space-not-found")
        snap = await api.authorized(space, api.maybe_who(request), "listen")
        rec = finished(snap)
        tag = str(rec["ready_at"])
        held = timelines.get(space)
        if held is None or held[0] != tag:
            index = await load_index(ctx.bus, space)
            if index is None:
                raise NotFound("this Space has no recording", slug="no-recording")
            reports: list[dict[str, Any]] = []
            for n in index.levels:
                raw = await ctx.bus.obj_get(BUCKET, levels_name(space, n))
                with contextlib.suppress(ValueError, TypeError):
                    reports += [r for r in json.loads(raw or b"[]") if isinstance(r, dict)]
            held = timelines[space] = (tag, {
                "duration": rec["duration"], "speakers": speaker_spans(index, reports),
                "host": snap.get("host"), "reactions": snap.get("reactions", {})})
        return held[1]

    deleted: dict[int | str, dict[str, Any]] = {
        200: {"model": Snapshot, "description": "the snapshot, recording false"}}

    @router.delete("/api/v1/spaces/{space}/recording", response_model=None,
                   responses=deleted | problems(401, 403, 404, 409, 429, 503))
    async def delete(space: str, request: Request) -> dict[str, Any]:
        """Delete the recording and its clips (host only), on every node."""
        ident = api.who(request)
        api.limit(ident)
        clips: list[str] = []

        def change(s: dict[str, Any]) -> dict[str, Any]:
            grants.authorize(ident, "host", s)
            if s["state"] != "ended":
                raise Conflict("the Space is not over: stop recording with the "
                               "record_off action", slug="not-ended")
            if not s.get("recording"):
                raise NotFound("this Space has no recording", slug="no-recording")
            clips.extend(s.get("_clips", []))
            return s | {"recording": False, "_clips": [], "_record_spans": [],
                        "_recording_deleted": time.time()}

        snap = await api.store.mutate(space, change)
        await purge(space, clips)
        return public_view(snap)

    clip_answers: dict[int | str, dict[str, Any]] = {
        201: {"model": ClipOut, "description": "the clip"}}

    @router.post("/api/v1/spaces/{space}/clips", status_code=201, response_model=None,
                 responses=clip_answers | problems(400, 401, 403, 404, 409, 410, 413, 422,
                                                   429, 503))
    async def clip(space: str, request: Request, body: ClipIn) -> dict[str, Any]:
        """Cut a clip (host, co-hosts and speakers while live; the host after the end)."""
        ident = api.who(request)
        api.limit(ident)
        snap = await api.authorized(space, ident, "clip")
        if snap["state"] == "scheduled":
            raise Conflict("the Space has not started", slug="not-live")
        if snap["state"] == "ended":
            finished(snap)
        start = round(body.start * SAMPLE_RATE)
        samples = max(round(body.duration * SAMPLE_RATE), 1)
        chunks = await _clip_material(snap, start, start + samples)
        try:
            built = clip_file(chunks, start, samples)
        except BadInput as exc:
            raise Unprocessable(f"{exc.detail}: the Space has audio from "
                                f"{_held(chunks)}", slug="clip-outside") from exc
        clip_id = f"{space}-{secrets.token_hex(5)}"
        await ctx.bus.obj_put(BUCKET, clip_name(space, clip_id), built.data)

        def remember(s: dict[str, Any]) -> dict[str, Any]:
            return s | {"_clips": [*s.get("_clips", []), clip_id][-CLIPS_LIMIT:]}

        await api.store.mutate(space, remember)
        return {"id": clip_id, "url": f"/clips/{clip_id}.opus",
                "duration": round(built.duration_s, 3)}

    async def _clip_material(snap: dict[str, Any], start: int, end: int) -> list[Chunk]:
        space = snap["id"]
        chunks: dict[int, Chunk] = {}
        index = await load_index(ctx.bus, space)
        if index is not None:
            for c in await load_chunks(ctx.bus, space, index.covering(start - 48_000, end)):
                chunks[c.seq] = c
        if snap["state"] == "live":
            for msg in await ctx.bus.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                            since_s=LIVE_CLIP_WINDOW_S, limit=1000):
                with contextlib.suppress(BadInput):
                    c = Chunk.decode(msg.data)
                    chunks.setdefault(c.seq, c)
        return [chunks[s] for s in sorted(chunks)]

    def _held(chunks: list[Chunk]) -> str:
        if not chunks:
            return "nowhere (nothing recorded)"
        return (f"{chunks[0].pts / SAMPLE_RATE:.1f} s to "
                f"{(chunks[-1].pts + chunks[-1].duration_samples) / SAMPLE_RATE:.1f} s")

    @router.get("/clips/{name}", **audio(401, 403, 404, 410))
    async def get_clip(name: str, request: Request) -> Response:
        """A clip as an Ogg/Opus file (Range, ETag, cached)."""
        clip_id = name.removesuffix(".opus")
        space, _, _ = clip_id.partition("-")
        if not name.endswith(".opus") or not is_space_id(space):
            raise NotFound("no such clip", slug="no-clip")
        snap = await api.authorized(space, api.maybe_who(request), "listen")
        if clip_id not in snap.get("_clips", []):
            raise NotFound("no such clip", slug="no-clip")
        if isinstance(snap.get("recording"), dict):
            finished(snap)  # clips go when their recording goes
        path = await cache.path(clip_name(space, clip_id), "1")
        if path is None:
            raise NotFound("no such clip", slug="no-clip")
        return _serve(request, path, f'"{clip_id}"', f"{clip_id}.opus", snap)

    app.include_router(router)
