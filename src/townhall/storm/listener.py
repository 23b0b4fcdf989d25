"""Simulated listeners: a WebSocket one that checks every chunk, an Ogg one that checks bytes."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from townhall.closecode import CloseCode
from townhall.media.chunk import Chunk
from townhall.storm.backoff import Backoff
from townhall.storm.continuity import Continuity

# Closes that end this listener's visit: the Space is gone or will not have it.
FATAL_CLOSES: dict[int, str] = {
    CloseCode.NOT_FOUND: "unknown Space", CloseCode.TOKEN_NEEDED: "token needed",
    CloseCode.FORBIDDEN: "token refused", CloseCode.ENDED: "Space ended"}
OGG_MAGIC = b"OggS"


@dataclass
class Events:
    """What one worker's listeners did since the last report (drained once a second)."""

    connected: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)  # lost audio, trying again
    left: list[int] = field(default_factory=list)  # listened for their stay, then left
    waited_ms: list[float] = field(default_factory=list)  # first refusal -> first audio
    ttfa_ms: list[float] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    skips: int = 0
    chunks: int = 0
    bytes: int = 0
    live: int = 0  # listeners receiving audio right now
    # --protocol browser: HTTP requests by kind, each viewer's totals when it closes the
    # page, and how many pages are open right now.
    requests: dict[str, int] = field(default_factory=dict)
    viewer_requests: list[dict[str, int]] = field(default_factory=list)
    viewers: int = 0
    loading: int = 0  # pages still loading (page, assets, snapshot, where to listen)
    socket_reactions: int = 0  # reactions sent over viewers' sockets

    def drain(self) -> dict[str, object]:
        """A picklable report of the events so far, and start afresh (gauges are kept)."""
        out = {k: v for k, v in self.__dict__.items()}
        live, viewers, loading = self.live, self.viewers, self.loading
        self.__init__()  # type: ignore[misc]
        self.live, self.viewers, self.loading = live, viewers, loading
        return out


def _now_us() -> int:
    return time.time_ns() // 1000


class Visit:
    """One listener's visit: when it started, its first refusal and audio, when it leaves."""

    def __init__(self, idx: int, until: float, stay_s: float | None) -> None:
        self.idx = idx
        self.started = time.monotonic()
        self.until = until          # the storm's end, or this listener's leaving time
        self.stay_s = stay_s        # listen this long once admitted (None: to the end)
        self.leaving = False
        self.got_audio = False
        self.first_refused: float | None = None

    def refused(self, ev: Events, reason: str) -> None:
        """Count a refused join (at most once per visit)."""
        ev.refused.append((self.idx, reason))
        if self.first_refused is None:
            self.first_refused = time.monotonic()

    def audio(self, ev: Events) -> None:
        """First audio of this visit: counted once, and the stay starts."""
        if self.got_audio:
            return
        self.got_audio = True
        now = time.monotonic()
        ev.connected.append(self.idx)
        ev.ttfa_ms.append((now - self.started) * 1000)
        if self.first_refused is not None:
            ev.waited_ms.append((now - self.first_refused) * 1000)
        if self.stay_s is not None and now + self.stay_s < self.until:
            self.until = now + self.stay_s
            self.leaving = True

    async def pause(self, backoff: Backoff, retry_after: float | None) -> None:
        """Back off (full jitter, at least Retry-After) before the next try, never past the end."""
        await asyncio.sleep(min(backoff.next_delay(retry_after),
                                max(0.0, self.until - time.monotonic())))

    def over(self, ev: Events) -> bool:
        """Past its end; a listener that stayed its time is counted as having left, once."""
        if time.monotonic() < self.until:
            return False
        if self.leaving:
            self.leaving = False
            ev.left.append(self.idx)
        return True


class VisitOver(Exception):
    """This listener's visit is over: the Space is gone or will not have it."""


class WsClient:
    """One WebSocket listener's visit: each connection checks every chunk's sequence and
    delay; the next one resumes with ``from=`` after the last chunk heard."""

    def __init__(self, idx: int, url: str, ev: Events, backoff: Backoff, visit: Visit,
                 sockets: dict[int, ClientConnection] | None) -> None:
        self.idx = idx
        self.url = url
        self.ev = ev
        self.backoff = backoff
        self.visit = visit
        self.sockets = sockets
        self.cont = Continuity()
        self.live = False  # this connection has delivered audio

    async def run(self) -> None:
        """Connect, and again after each close or refusal, until the visit is over."""
        while not self.visit.over(self.ev):
            try:
                retry_after = await self.attempt()
            except VisitOver:
                return
            if self.visit.over(self.ev):
                return
            await self.visit.pause(self.backoff, retry_after)

    async def attempt(self) -> float | None:
        """One connection until it closes; the retry delay a refusal asked for, if any."""
        resume = self.cont.resume_from()
        target = self.url if resume is None else f"{self.url}?from={resume}"
        self.live = False
        try:
            async with connect(target, open_timeout=10, max_size=2**20) as ws:
                if self.sockets is not None:
                    self.sockets[self.idx] = ws
                async for msg in ws:
                    if isinstance(msg, bytes):
                        self.on_chunk(msg)
                    else:
                        self.on_text(msg)
                    if time.monotonic() >= self.visit.until:
                        break
        except ConnectionClosed as exc:
            return self.closed(exc)
        except InvalidStatus as exc:
            return self.refused(exc)
        except (OSError, TimeoutError) as exc:
            if not self.visit.got_audio:
                self.ev.failed.append((self.idx, f"connect error: {type(exc).__name__}"))
            else:
                self.ev.restarted.append(self.idx)
        finally:
            if self.live:
                self.ev.live -= 1
            if self.sockets is not None:
                self.sockets.pop(self.idx, None)
        return None

    def on_chunk(self, msg: bytes) -> None:
        """A chunk: counted, checked for gaps, its delay kept; the first one is audio."""
        ev, cont = self.ev, self.cont
        chunk = Chunk.decode(msg)
        before = (cont.gaps, cont.chunks)
        cont.chunk(chunk.seq, chunk.sent_us, _now_us())
        ev.gaps += cont.gaps - before[0]
        ev.chunks += cont.chunks - before[1]
        ev.bytes += len(msg)
        if not self.live:
            self.live = True
            ev.live += 1
            self.backoff.reset()
            self.visit.audio(ev)
        ev.delays_ms.extend(cont.take_delays())

    def on_text(self, msg: str) -> None:
        """A text frame: a ``jump`` moves the expected sequence on (counted as skips)."""
        body = json.loads(msg)
        if body.get("type") == "jump":
            skipped = self.cont.skipped
            self.cont.jump(int(body["to"]))
            self.ev.skips += self.cont.skipped - skipped

    def closed(self, exc: ConnectionClosed) -> float | None:
        """The edge closed the socket: a fatal code ends the visit, 4503 (full) is a
        refusal with its retry delay, any other a restart once audio had come."""
        code = exc.rcvd.code if exc.rcvd else 1006
        reason = exc.rcvd.reason if exc.rcvd else ""
        if code in FATAL_CLOSES:
            self.ev.failed.append((self.idx, f"closed {code} {FATAL_CLOSES[code]}"))
            raise VisitOver from exc
        if code == CloseCode.FULL:
            self.visit.refused(self.ev, "4503 edge full")
            return float(json.loads(reason or "{}").get("retry_after", 1))
        if self.visit.got_audio:
            self.ev.restarted.append(self.idx)
        return None

    def refused(self, exc: InvalidStatus) -> float | None:
        """The upgrade was answered with an HTTP status: 404 ends the visit; any other is
        a refusal, with its Retry-After."""
        status = exc.response.status_code
        if status == 404:
            self.ev.failed.append((self.idx, "HTTP 404 unknown Space"))
            raise VisitOver from exc
        self.visit.refused(self.ev, f"HTTP {status}")
        header = exc.response.headers.get("Retry-After")
        return float(header) if header else None


async def ws_listener(idx: int, base: str, space: str, until: float, ev: Events,
                      backoff: Backoff, stay_s: float | None = None, *,
                      url: str | None = None, visit: Visit | None = None,
                      sockets: dict[int, ClientConnection] | None = None) -> None:
    """One WebSocket listener until the monotonic deadline `until`; reconnects with from=.

    With ``stay_s`` it leaves that long after its first audio (and does not come back).
    A browser viewer passes the socket ``url`` its page chose and its ``visit`` (started
    at the page load, so first audio is timed from there); while connected the socket is
    in ``sockets`` (keyed by idx) for reactions to be sent on.
    """
    url = url or base.replace("http", "ws", 1).rstrip("/") + f"/ws/{space}"
    await WsClient(idx, url, ev, backoff, visit or Visit(idx, until, stay_s), sockets).run()


async def ogg_listener(idx: int, base: str, space: str, until: float, ev: Events,
                       backoff: Backoff, client: httpx.AsyncClient,
                       stay_s: float | None = None) -> None:
    """One Ogg/Opus listener: checks the stream starts with OggS pages and keeps flowing."""
    url = base.rstrip("/") + f"/listen/{space}.opus"
    visit = Visit(idx, until, stay_s)
    while not visit.over(ev):
        retry_after: float | None = None
        live = False
        try:
            async with client.stream("GET", url, timeout=10) as resp:
                if resp.status_code == 503:
                    visit.refused(ev, "HTTP 503 edge full")
                    header = resp.headers.get("Retry-After")
                    retry_after = float(header) if header else None
                elif resp.status_code == 404:
                    ev.failed.append((idx, "HTTP 404 unknown Space"))
                    return
                elif resp.status_code != 200:
                    visit.refused(ev, f"HTTP {resp.status_code}")
                else:
                    first = True
                    async for data in resp.aiter_bytes():
                        if first and not data.startswith(OGG_MAGIC):
                            ev.failed.append((idx, "not an Ogg stream"))
                            return
                        first = False
                        ev.bytes += len(data)
                        if not live:
                            live = True
                            ev.live += 1
                            backoff.reset()
                            visit.audio(ev)
                        if time.monotonic() >= visit.until:
                            break
        except httpx.HTTPError as exc:
            if not visit.got_audio:
                ev.failed.append((idx, f"connect error: {type(exc).__name__}"))
                return
            ev.restarted.append(idx)
        finally:
            if live:
                ev.live -= 1
        if visit.over(ev):
            return
        await visit.pause(backoff, retry_after)
