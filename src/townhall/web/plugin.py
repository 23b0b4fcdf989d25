"""Serves the web app: the SPA shell at ``/`` and ``/s/{id}``, assets under ``/static``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from townhall.context import Context

STATIC = Path(str(files("townhall.web") / "static"))


def _shell() -> HTMLResponse:
    # Read per request: cheap, and edits show without a restart during development.
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


def install(app: FastAPI, ctx: Context) -> None:
    """Add the web app's routes to the api-role HTTP app."""

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return _shell()

    @app.get("/s/{space}", include_in_schema=False)
    async def space_page(space: str) -> HTMLResponse:
        return _shell()

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
