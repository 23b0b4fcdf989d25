"""A simulated browser viewer of a shared link: page, assets, snapshot, where to listen, socket.

What it fetches is read from the HTML (townhall.storm.page), so it follows the page as it
is: today's shell that fetches the snapshot, or a page that embeds it. With ``poll_s`` it
also behaves like the previous web app, which fetched the snapshot every 2 s while open.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from townhall.storm.actors import REACTION_EMOJI
from townhall.storm.backoff import Backoff
from townhall.storm.httpcache import HttpCache
from townhall.storm.listener import Events, Visit, ws_listener
from townhall.storm.page import PageRefs, module_imports, parse_page, resolve
from townhall.storm.requestkinds import ViewerRequests
from townhall.storm.tabhttp import FetchError, TabHttp

MAX_ASSETS = 64  # a bound on what one page may make us fetch (imports can chain)


class PageFailed(Exception):
    """The page, or something it cannot work without, did not load."""


@dataclass
class BrowserWorld:
    """What the viewers of one worker share: the asset cache and the open sockets."""

    assets: HttpCache = field(default_factory=HttpCache)
    sockets: dict[int, ClientConnection] = field(default_factory=dict)
    # Parsed pages and modules by content: every tab parses the same bytes, and parsing
    # them thousands of times would cost the load generator more than the server.
    _pages: dict[tuple[str, bytes], PageRefs] = field(default_factory=dict)
    _imports: dict[tuple[str, bytes], list[str]] = field(default_factory=dict)

    def page(self, url: str, html: bytes) -> PageRefs:
        """The page's references (parsed once per distinct page)."""
        key = (url, html)
        if key not in self._pages:
            if len(self._pages) > 64:
                self._pages.clear()
            self._pages[key] = parse_page(html.decode("utf-8", "replace"), url)
        return self._pages[key]

    def imports(self, url: str, js: bytes) -> list[str]:
        """A module's static imports (parsed once per distinct module)."""
        key = (url, js)
        if key not in self._imports:
            if len(self._imports) > 256:
                self._imports.clear()
            self._imports[key] = module_imports(js.decode("utf-8", "replace"), url)
        return self._imports[key]


class Tab:
    """One viewer's browser tab: its own cache (ETags) and request counts."""

    def __init__(self, world: BrowserWorld, ev: Events) -> None:
        self.world = world
        self.ev = ev
        self.own = HttpCache(honour_freshness=False)  # api answers: revalidate, never reuse
        self.counts = ViewerRequests()
        self.http = TabHttp()

    async def get(self, url: str, shared: bool = False) -> tuple[int, bytes | None]:
        """GET like a browser: from a fresh cache entry, else a (conditional) request."""
        cache = self.world.assets if shared else self.own
        body = cache.fresh(url, time.monotonic())
        if body is not None:
            return 200, body
        kind = self.counts.add("GET", url)
        self.ev.requests[kind] = self.ev.requests.get(kind, 0) + 1
        resp = await self.http.get(url, cache.request_headers(url))
        got = cache.response(url, resp.status, resp.headers, resp.body, time.monotonic())
        if resp.status == 304 and got is not None:
            return 200, got  # what the page sees: the stored response, still valid
        return resp.status, got if got is not None else resp.body

    async def load_assets(self, refs: list[str], modules: set[str]) -> None:
        """Fetch every asset at once, as a browser does, then the imports of the modules."""
        seen = set(refs)
        todo = list(refs)
        while todo and len(seen) <= MAX_ASSETS:
            got = await asyncio.gather(*(self.get(u, shared=True) for u in todo))
            nxt: list[str] = []
            for url, (status, body) in zip(todo, got, strict=True):
                if status != 200 or body is None:
                    raise PageFailed(f"asset HTTP {status}")
                if url in modules or url.endswith((".js", ".mjs")):
                    for dep in self.world.imports(url, body):
                        if dep not in seen:
                            seen.add(dep)
                            nxt.append(dep)
            todo = nxt


def socket_url(page_url: str, edges: list[dict[str, Any]] | None, space: str) -> str:
    """The WebSocket URL of the first usable edge, else this origin's /ws/<space>."""
    for e in edges or []:
        if isinstance(e, dict) and e.get("ws"):
            ws = str(e["ws"])
            if ws.startswith(("ws://", "wss://")):
                return ws
            url = resolve(page_url, ws)
            if url:
                return url.replace("http", "ws", 1)
    return (resolve(page_url, f"/ws/{space}") or "").replace("http", "ws", 1)


async def _open_page(tab: Tab, base: str, space: str) -> str:
    """Page, assets, snapshot and edge list; returns the socket URL to listen on."""
    page_url = f"{base}/s/{space}"
    status, html = await tab.get(page_url)
    if status != 200 or html is None:
        raise PageFailed(f"page HTTP {status}")
    refs = tab.world.page(page_url, html)
    await tab.load_assets(refs.assets, refs.modules)
    snap = refs.snapshot
    if snap is None:
        status, body = await tab.get(f"{base}/api/v1/spaces/{space}")
        if status != 200 or body is None:
            raise PageFailed(f"snapshot HTTP {status}")
        snap = json.loads(body)
    edges = snap.get("edges") if isinstance(snap, dict) else None
    if not edges:
        # The page does not say where to listen: ask the api, as the player does.
        status, body = await tab.get(f"{base}/api/v1/spaces/{space}/listen")
        if status == 200 and body is not None:
            edges = json.loads(body).get("edges")
    return socket_url(page_url, edges, space)


async def _poll(tab: Tab, base: str, space: str, every: float, rng: random.Random) -> None:
    """The previous web app: the snapshot again every `every` s (errors: next poll)."""
    await asyncio.sleep(every * rng.random())  # pages opened at once do not poll in step
    while True:
        try:
            await tab.get(f"{base}/api/v1/spaces/{space}")
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(every)


async def browser_viewer(idx: int, base: str, space: str, until: float, ev: Events,
                         backoff: Backoff, world: BrowserWorld, stay_s: float | None = None,
                         poll_s: float = 0.0, rng: random.Random | None = None) -> None:
    """One viewer from opening the shared link to closing the tab."""
    visit = Visit(idx, until, stay_s)  # first audio is timed from the page request
    tab = Tab(world, ev)
    ev.viewers += 1
    poller: asyncio.Future[None] | None = None
    try:
        ev.loading += 1
        try:
            ws_url = await _open_page(tab, base.rstrip("/"), space)
        except (PageFailed, OSError, TimeoutError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, PageFailed | FetchError) \
                else type(exc).__name__
            ev.failed.append((idx, f"page load: {reason}"))
            return
        finally:
            ev.loading -= 1
        if poll_s > 0:
            poller = asyncio.ensure_future(_poll(tab, base.rstrip("/"), space, poll_s,
                                                 rng or random.Random(idx)))
        await ws_listener(idx, base, space, until, ev, backoff, stay_s, url=ws_url,
                          visit=visit, sockets=world.sockets)
    finally:
        if poller is not None:
            poller.cancel()
        tab.http.close()
        ev.viewers -= 1
        ev.viewer_requests.append(tab.counts.as_dict())


async def socket_reactions(world: BrowserWorld, rate: float, until: float,
                           rng: random.Random, ev: Events) -> None:
    """Reactions over open sockets (as the page sends them) at `rate` per second."""
    if rate <= 0:
        return
    while time.monotonic() < until:
        await asyncio.sleep(rng.expovariate(rate))
        if not world.sockets:
            continue
        ws = world.sockets[rng.choice(list(world.sockets))]
        try:
            await ws.send(json.dumps({"type": "react", "emoji": rng.choice(REACTION_EMOJI)}))
            ev.socket_reactions += 1
        except ConnectionClosed:
            pass  # that viewer's socket closed under us: its listener reconnects
