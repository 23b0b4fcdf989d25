"""The floods of issue 13, each an asyncio coroutine that runs until ``stop`` is set and
returns what the server answered: WHIP bombs and plain offers from one fresh guest,
slowloris sockets, and joins at 10× a normal rate from one address."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import websockets
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack


async def real_offer() -> str:
    """An aiortc audio offer with ICE gathered: what `townhall speak` sends."""
    pc = RTCPeerConnection()
    pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def bomb(offer: str, sections: int = 213, size: int = 64_000) -> str:
    """Issue 13's bomb from a real offer: its ICE and DTLS lines once at session level, then
    ``sections`` minimal ``m=audio`` sections, padded with attribute lines to ``size`` bytes."""
    keep = ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup")
    shared = sorted({line for line in offer.split("\r\n") if line.startswith(keep)})
    head = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
            f"a=group:BUNDLE {' '.join(map(str, range(sections)))}\r\n"
            + "".join(line + "\r\n" for line in shared))
    candidate = next((line for line in offer.split("\r\n") if line.startswith("a=candidate")),
                     "")
    section = ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n"
               "a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n")
    body = [head] + [section.format(i=i) for i in range(sections)]
    if candidate:
        body.insert(2, candidate + "\r\n")
    text = "".join(body)
    pad = max(0, size - len(text)) // sections
    if pad > 12:
        text = re.sub(r"(a=rtpmap:111 opus/48000/2\r\n)",
                      lambda m: m.group(1) + "a=x-pad:" + "p" * (pad - 10) + "\r\n", text)
    return text


async def whip_flood(url: str, space: str, token: str, offers: list[str], stop: asyncio.Event,
                     concurrency: int = 8) -> Counter[int]:
    """POST the offers round-robin, ``concurrency`` at a time, until ``stop``; statuses."""
    seen: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}

    async def worker(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            i = k
            while not stop.is_set():
                try:
                    r = await http.post(f"/whip/{space}", content=offers[i % len(offers)],
                                        headers=headers)
                    seen[r.status_code] += 1  # an accepted one replaces the one before
                except httpx.HTTPError:
                    seen[-1] += 1
                i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return seen


async def slowloris(url: str, stop: asyncio.Event, sockets: int = 200,
                    every_s: float = 5.0) -> Counter[str]:
    """``sockets`` connections that send a request's headers one line every ``every_s`` and
    never finish; counts how many the server still held when ``stop`` came."""
    parts = urlsplit(url)
    held: Counter[str] = Counter()

    async def one(k: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            held["refused"] += 1
            return
        try:
            writer.write(f"GET /?slow={k} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
            await writer.drain()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every_s):
                        await stop.wait()
                if stop.is_set():
                    break
                writer.write(f"X-Slow-{k}: {time.monotonic():.0f}\r\n".encode())
                await writer.drain()
            # Still open if a read sees no EOF at once.
            try:
                async with asyncio.timeout(0.05):
                    data = await reader.read(1)
                held["closed" if not data else "answered"] += 1
            except TimeoutError:
                held["held"] += 1
        except (OSError, ConnectionError):
            held["closed"] += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(one(k) for k in range(sockets)))
    return held


async def join_flood(url: str, space: str, stop: asyncio.Event, rate: float,
                     from_seq: int | None) -> Counter[str]:
    """WebSocket joins from this one address at ``rate`` a second (each waits for its first
    chunk, at most 2 s, then leaves), replaying ``?from=`` when given."""
    ws_url = url.replace("http", "ws", 1) + f"/ws/{space}"
    if from_seq is not None:
        ws_url += f"?from={from_seq}"
    seen: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            async with asyncio.timeout(2), websockets.connect(ws_url, max_size=2**20) as ws:
                async for frame in ws:
                    if isinstance(frame, bytes):
                        seen["admitted"] += 1
                        return
        except TimeoutError:
            seen["no audio in 2 s"] += 1
        except websockets.InvalidStatus as exc:
            seen[f"refused {exc.response.status_code}"] += 1
        except (OSError, websockets.WebSocketException):
            seen["failed"] += 1

    start = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, start + n / rate - time.monotonic())):
                await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return seen
