"""Simulated listeners: a WebSocket one that checks every chunk, an Ogg one that checks bytes."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from townhall.media.chunk import Chunk
from townhall.storm.backoff import Backoff
from townhall.storm.continuity import Continuity

CLOSE_FULL = 4503
CLOSE_SLOW = 4408
CLOSE_ENDED = 4410
FATAL_CLOSES = {4404: "unknown Space", 4401: "token needed", 4403: "token refused",
                4410: "Space ended"}
OGG_MAGIC = b"OggS"


@dataclass
class Events:
    """What one worker's listeners did since the last report (drained once a second)."""

    connected: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)  # lost audio, trying again
    ttfa_ms: list[float] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    skips: int = 0
    chunks: int = 0
    bytes: int = 0
    live: int = 0  # listeners receiving audio right now

    def drain(self) -> dict[str, object]:
        """A picklable report of the events so far, and start afresh (live is kept)."""
        out = {k: v for k, v in self.__dict__.items()}
        live = self.live
        self.__init__()  # type: ignore[misc]
        self.live = live
        return out


def _now_us() -> int:
    return time.time_ns() // 1000


async def ws_listener(idx: int, base: str, space: str, until: float, ev: Events,
                      backoff: Backoff) -> None:
    """One WebSocket listener until the monotonic deadline `until`; reconnects with from=."""
    url = base.replace("http", "ws", 1).rstrip("/") + f"/ws/{space}"
    cont = Continuity()
    started = time.monotonic()
    got_audio = False
    while time.monotonic() < until:
        resume = cont.resume_from()
        target = url if resume is None else f"{url}?from={resume}"
        retry_after: float | None = None
        live = False
        try:
            async with connect(target, open_timeout=10, max_size=2**20) as ws:
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
                            if not got_audio:
                                got_audio = True
                                ev.connected.append(idx)
                                ev.ttfa_ms.append((time.monotonic() - started) * 1000)
                        ev.delays_ms.extend(cont.take_delays())
                    else:
                        body = json.loads(msg)
                        if body.get("type") == "jump":
                            s = cont.skipped
                            cont.jump(int(body["to"]))
                            ev.skips += cont.skipped - s
                    if time.monotonic() >= until:
                        break
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else ""
            if code in FATAL_CLOSES:
                ev.failed.append((idx, f"closed {code} {FATAL_CLOSES[code]}"))
                return
            if code == CLOSE_FULL:
                ev.refused.append((idx, "4503 edge full"))
                retry_after = float(json.loads(reason or "{}").get("retry_after", 1))
            elif got_audio:
                ev.restarted.append(idx)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                ev.failed.append((idx, "HTTP 404 unknown Space"))
                return
            ev.refused.append((idx, f"HTTP {status}"))
            header = exc.response.headers.get("Retry-After")
            retry_after = float(header) if header else None
        except (OSError, TimeoutError) as exc:
            if not got_audio:
                ev.failed.append((idx, f"connect error: {type(exc).__name__}"))
            else:
                ev.restarted.append(idx)
        finally:
            if live:
                ev.live -= 1
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(backoff.next_delay(retry_after),
                                max(0.0, until - time.monotonic())))


async def ogg_listener(idx: int, base: str, space: str, until: float, ev: Events,
                       backoff: Backoff, client: httpx.AsyncClient) -> None:
    """One Ogg/Opus listener: checks the stream starts with OggS pages and keeps flowing."""
    url = base.rstrip("/") + f"/listen/{space}.opus"
    started = time.monotonic()
    got_audio = False
    while time.monotonic() < until:
        retry_after: float | None = None
        live = False
        try:
            async with client.stream("GET", url, timeout=10) as resp:
                if resp.status_code == 503:
                    ev.refused.append((idx, "HTTP 503 edge full"))
                    header = resp.headers.get("Retry-After")
                    retry_after = float(header) if header else None
                elif resp.status_code == 404:
                    ev.failed.append((idx, "HTTP 404 unknown Space"))
                    return
                elif resp.status_code != 200:
                    ev.refused.append((idx, f"HTTP {resp.status_code}"))
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
                            if not got_audio:
                                got_audio = True
                                ev.connected.append(idx)
                                ev.ttfa_ms.append((time.monotonic() - started) * 1000)
                        if time.monotonic() >= until:
                            return
        except httpx.HTTPError as exc:
            if not got_audio:
                ev.failed.append((idx, f"connect error: {type(exc).__name__}"))
                return
            ev.restarted.append(idx)
        finally:
            if live:
                ev.live -= 1
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(backoff.next_delay(retry_after),
                                max(0.0, until - time.monotonic())))
