"""A listener that survives edges dying: the asyncio shell around EdgeChooser.

It asks the api which edges serve a Space, reads ``/ws/<space>`` from the first, and on
any drop moves to the next with ``from=<next seq>`` so no chunk is lost while an edge's
ring buffer or JetStream still holds it. It counts what a person would notice: chunks,
missing sequence numbers, skips the edge announced, reconnects, and how long each outage
lasted from the drop to the next chunk heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from townhall.client.failover import EdgeChooser
from townhall.closecode import CloseCode
from townhall.media.chunk import Chunk


class ListenError(Exception):
    """The Space cannot be listened to (unknown, ended before we came, refused)."""


@dataclass
class ListenStats:
    """What one listener heard."""

    chunks: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: int = 0          # sequence numbers never received (holes we noticed)
    skipped: int = 0          # sequence numbers the edge told us it skipped (jump frames)
    reconnects: int = 0
    refusals: int = 0
    outages_s: list[float] = field(default_factory=list)
    edges_used: list[str] = field(default_factory=list)
    ended: bool = False


def ws_url(base: str, target: str) -> str:
    """Turn an edge entry (absolute http(s)/ws(s) URL or same-origin path) into a ws URL."""
    if target.startswith("/"):
        target = base.rstrip("/") + target
    parts = urlsplit(target)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


async def edge_list(base: str, space: str, token: str | None = None) -> list[str]:
    """The ws URLs of the edges serving ``space``, least loaded first."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(f"{base.rstrip('/')}/api/v1/spaces/{space}/listen", headers=headers)
    if r.status_code == 404:
        raise ListenError(f"no Space {space} at {base}")
    r.raise_for_status()
    body = r.json()
    urls = [ws_url(base, e["ws"]) for e in body.get("edges", []) if e.get("ws")]
    return urls or [ws_url(base, body.get("ws", f"/ws/{space}"))]


class ResilientListener:
    """Listen to one Space across edge failures until stopped or the Space ends."""

    def __init__(self, base: str, space: str, *, token: str | None = None,
                 edges: list[str] | None = None, rng: random.Random | None = None,
                 on_chunk: Callable[[Chunk], None] | None = None) -> None:
        self.base = base
        self.space = space
        self.token = token
        self._edges = edges
        self._rng = rng or random.Random()
        self.on_chunk = on_chunk
        self.stats = ListenStats()
        self._dropped_at: float | None = None

    def _url(self, edge: str) -> str:
        sep = "&" if "?" in edge else "?"
        query = []
        if self.stats.last_seq is not None:
            query.append(f"from={self.stats.last_seq + 1}")
        if self.token:
            query.append(f"token={self.token}")
        return edge + (sep + "&".join(query) if query else "")

    def _on_binary(self, data: bytes) -> None:
        chunk = Chunk.decode(data)
        st = self.stats
        if st.last_seq is not None:
            if chunk.seq <= st.last_seq:
                return  # a duplicate after a resume
            st.missing += chunk.seq - st.last_seq - 1
        if st.first_seq is None:
            st.first_seq = chunk.seq
        st.last_seq = chunk.seq
        st.chunks += 1
        if self._dropped_at is not None:
            st.outages_s.append(time.monotonic() - self._dropped_at)
            self._dropped_at = None
        if self.on_chunk:
            self.on_chunk(chunk)

    def _on_text(self, raw: str) -> None:
        with contextlib.suppress(ValueError, TypeError):
            msg: dict[str, Any] = json.loads(raw)
            if msg.get("type") == "jump":
                skipped = int(msg["to"]) - int(msg["from"])
                self.stats.skipped += max(0, skipped)
                # The edge will send `to` next; do not count the skip as missing too.
                self.stats.last_seq = int(msg["to"]) - 1

    async def run(self, stop: asyncio.Event) -> ListenStats:
        """Listen, moving to another edge when one fails, until ``stop`` is set."""
        edges = self._edges or await edge_list(self.base, self.space, self.token)
        chooser = EdgeChooser(edges, rng=self._rng)
        while not stop.is_set():
            edge = chooser.current
            retry_after: float | None = None
            try:
                async with connect(self._url(edge), open_timeout=5, max_size=2**20,
                                   close_timeout=1) as ws:
                    self.stats.edges_used.append(edge)
                    recv = asyncio.ensure_future(ws.recv())
                    halt = asyncio.ensure_future(stop.wait())
                    try:
                        while True:
                            done, _ = await asyncio.wait({recv, halt},
                                                         return_when=asyncio.FIRST_COMPLETED)
                            if halt in done:
                                return self.stats
                            data = recv.result()
                            if isinstance(data, bytes):
                                self._on_binary(data)
                                chooser.connected()
                            else:
                                self._on_text(data)
                            recv = asyncio.ensure_future(ws.recv())
                    finally:
                        recv.cancel()
                        halt.cancel()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
                reason = closed.rcvd.reason if closed.rcvd else ""
                if code == CloseCode.ENDED:
                    self.stats.ended = True
                    return self.stats
                if code == CloseCode.NOT_FOUND:
                    raise ListenError(f"no Space {self.space}") from closed
                detail: dict[str, Any] = {}
                with contextlib.suppress(ValueError):
                    detail = json.loads(reason or "{}")
                if code == CloseCode.FULL:
                    self.stats.refusals += 1
                    retry_after = float(detail.get("retry_after", 1.0))
                elif code == CloseCode.TOO_SLOW and "resume_from" in detail:
                    self.stats.last_seq = int(detail["resume_from"]) - 1
            except InvalidStatus as refused:
                status = refused.response.status_code
                if status == 404:
                    raise ListenError(f"no Space {self.space}") from refused
                if status == 503:
                    self.stats.refusals += 1
                    retry_after = float(refused.response.headers.get("Retry-After", "1"))
            except (OSError, WebSocketException, TimeoutError):
                pass
            if self._dropped_at is None and self.stats.chunks:
                self._dropped_at = time.monotonic()
            self.stats.reconnects += 1
            delay = chooser.failed(retry_after)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        return self.stats
