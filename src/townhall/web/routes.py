"""Serves the web app: the home page, a Space's share page ``/s/{id}``, its embeddable player
``/embed/{id}``, a clip's share page ``/c/{clip}``, the API reference ``/docs``, and the
assets under ``/static/{build}/``.

Pages are rendered here from the snapshot (townhall.web.pages) and are cacheable by a CDN
or reverse proxy for a few seconds; assets are immutable under their build's URL.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from townhall import grants
from townhall.context import Context
from townhall.problems import NotFound
from townhall.room.rules import is_space_id
from townhall.room.snapshot import Space
from townhall.web.pages import Page, Renderer, build_hash

STATIC = Path(str(files("townhall.web") / "static"))
TEMPLATE = Path(str(files("townhall.web") / "page.html"))
# Pages and snapshots change every second or so while live: a shared cache may keep them
# this briefly, and serve a stale copy while it fetches a fresh one.
PAGE_CACHE = "public, max-age=5, s-maxage=5, stale-while-revalidate=30"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "private, no-store"
_VERSION = re.compile(r"[0-9a-f]{12}")


class VersionedStatic(StaticFiles):
    """``/static/<build>/<file>`` cached for a year; ``/static/<file>`` and other builds'
    URLs (a page from before a deploy) get the current file, revalidated every time."""

    def __init__(self, directory: Path, build: str) -> None:
        super().__init__(directory=directory)
        self.build = build

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file, cached for a year under its build's URL, revalidated otherwise."""
        first, _, rest = path.partition("/")
        immutable = first == self.build and bool(rest)
        if _VERSION.fullmatch(first) and rest:
            path = rest
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = IMMUTABLE if immutable else "no-cache"
        return response


def _html(request: Request, body: str, *, status: int = 200, cache: str = PAGE_CACHE) -> Response:
    """An HTML answer with a strong ETag over its bytes, 304 when the client has them."""
    data = body.encode()
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    headers = {"Cache-Control": cache}
    if status == 200:
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
    return HTMLResponse(data, status_code=status, headers=headers)


def install(app: FastAPI, ctx: Context) -> None:
    """Add the web app's routes to the api-role HTTP app (pages answer HEAD too: link
    preview fetchers ask it)."""
    build = build_hash(STATIC)
    renderer = Renderer(TEMPLATE.read_text(encoding="utf-8"), Page(
        static=f"/static/{build}", open_mode=ctx.settings.open_mode,
        public_url=ctx.settings.public_url))

    async def public_snapshot(space: str) -> Space | None:
        """``space`` if anyone may read it (the pages show its public view only); None
        when unknown *or* private (same answer)."""
        api = getattr(app.state, "api", None)
        if api is None:
            return None
        try:
            snap = await api.store.get(space)
        except NotFound:
            return None
        # What anyone without a token may read (townhall.grants): never a private Space.
        return snap if grants.allows(None, "read", snap) else None

    async def space_or_404(request: Request, space: str, *, embed: bool) -> Response:
        snap = await public_snapshot(space)
        if snap is None:
            view = "embed" if embed else "space"
            return _html(request, renderer.not_found(view), status=404, cache=NO_STORE)
        return _html(request, renderer.space(snap, embed=embed))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def home(request: Request) -> Response:
        return _html(request, renderer.home())

    @app.api_route("/s/{space}", methods=["GET", "HEAD"], include_in_schema=False)
    async def space_page(space: str, request: Request) -> Response:
        return await space_or_404(request, space, embed=False)

    @app.api_route("/embed/{space}", methods=["GET", "HEAD"], include_in_schema=False)
    async def embed_page(space: str, request: Request) -> Response:
        return await space_or_404(request, space, embed=True)

    @app.api_route("/c/{clip}", methods=["GET", "HEAD"], include_in_schema=False)
    async def clip_page(clip: str, request: Request) -> Response:
        """A clip's share page: a public Space's clip that exists; else the 404 page."""
        space, _, _ = clip.partition("-")
        snap = await public_snapshot(space) if is_space_id(space) else None
        if snap is None or not await clip_exists(space, clip):
            return _html(request, renderer.not_found("clip"), status=404, cache=NO_STORE)
        return _html(request, renderer.clip(snap, clip))

    async def clip_exists(space: str, clip: str) -> bool:
        api = getattr(app.state, "api", None)
        if api is None:
            return False
        try:
            doc = await api.store.get(space)
        except NotFound:
            return False
        expired = doc.finished is not None and doc.finished.state == "expired"
        return clip in doc.clips and not expired

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        # Our own small reference page over /openapi.json: Swagger UI would load its
        # scripts from a public CDN.
        return _html(request, renderer.docs())

    app.mount("/static", VersionedStatic(STATIC, build), name="static")
