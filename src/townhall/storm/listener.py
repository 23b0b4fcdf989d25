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
    cont = Continuity()
    visit = visit or Visit(idx, until, stay_s)
    while not visit.over(ev):
        resume = cont.resume_from()
        target = url if resume is None else f"{url}?from={resume}"
        retry_after: float | None = None
        live = False
        try:
            async with connect(target, open_timeout=10, max_size=2**20) as ws:
                if sockets is not None:
                    sockets[idx] = ws
                async for msg in ws:
                    if isinstance(msg, bytes):
                        chunk = Chunk.decode(msg)
                        before = (cont.gaps, cont.chunks)
                        cont.chunk(chunk.seq, chunk.sent_us, _now_us())
                        ev.gaps += cont.gaps - before[0]
                        ev.chunks += cont.chunks - before[1]
                        ev.bytes += len(msg)
                        if not live:
                            live = True
                            ev.live += 1
                            backoff.reset()
                            visit.audio(ev)
                        ev.delays_ms.extend(cont.take_delays())
                    else:
                        body = json.loads(msg)
                        if body.get("type") == "jump":
                            s = cont.skipped
                            cont.jump(int(body["to"]))
                            ev.skips += cont.skipped - s
                    if time.monotonic() >= visit.until:
                        break
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else ""
            if code in FATAL_CLOSES:
                ev.failed.append((idx, f"closed {code} {FATAL_CLOSES[code]}"))
                return
            if code == CloseCode.FULL:
                visit.refused(ev, "4503 edge full")
                retry_after = float(json.loads(reason or "{}").get("retry_after", 1))
            elif visit.got_audio:
                ev.restarted.append(idx)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                ev.failed.append((idx, "HTTP 404 unknown Space"))
                return
            visit.refused(ev, f"HTTP {status}")
            header = exc.response.headers.get("Retry-After")
            retry_after = float(header) if header else None
        except (OSError, TimeoutError) as exc:
            if not visit.got_audio:
                ev.failed.append((idx, f"connect error: {type(exc).__name__}"))
            else:
                ev.restarted.append(idx)
        finally:
            if live:
                ev.live -= 1
            if sockets is not None:
                sockets.pop(idx, None)
        if visit.over(ev):
            return
        await visit.pause(backoff, retry_after)


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
