"""HLS delay: how long after the stage publishes a chunk a client has the segment or part
that holds it, for plain HLS (2 s segments), low-latency HLS (0.5 s parts, blocking
playlist reload), the AAC rendition, and, for comparison, the WebSocket and Ogg listeners.

One `townhall serve` with a live Space and a `townhall speak --tone` speaker; on the same
machine one asyncio process runs every client at once:

- a WebSocket listener (``/ws/<id>``): each binary frame is a chunk, whose ``sent`` is the
  stage's publish time, so it also gives the publish time of every ``pts``;
- an Ogg listener (``/listen/<id>.opus``): one page per chunk, matched to its chunk by the
  packets' bytes;
- plain HLS: polls ``opus.m3u8`` every 250 ms (a player reloads once per target duration,
  2 s, which adds up to 2 s more) and fetches each new segment;
- LL-HLS: asks for the next part with ``_HLS_msn``/``_HLS_part`` (the request blocks until
  it exists), then fetches it; for ``opus.m3u8`` and ``aac.m3u8``.

For each segment or part, "newest" is the delay of its last chunk (the best case: the
client has it as soon as it can), "oldest" of its first (the segment's length on top).
A player then holds back its own buffer: 3 target durations (6 s) for plain HLS (ffmpeg,
hls.js, AVPlayer), PART-HOLD-BACK (1.5 s) for LL-HLS.

    .venv/bin/python -m bench hls            (writes its table into bench/README.md)
    .venv/bin/python -m bench.hls.run        (prints only)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import websockets
from rich.progress import Progress

from bench._local import live_space, start_server, stop
from townhall.media.chunk import Chunk
from townhall.media.hls import PART_SAMPLES, SEGMENT_SAMPLES


class Clock:
    """Publish times of the program, learnt from the WebSocket listener's chunks."""

    def __init__(self) -> None:
        self.by_pts: dict[int, float] = {}       # chunk pts -> publish time (s)
        self.by_bytes: dict[bytes, float] = {}   # chunk packets -> publish time (s)
        self.ends: list[int] = []

    def add(self, chunk: Chunk) -> None:
        sent = chunk.sent_us / 1e6
        self.by_pts[chunk.pts] = sent
        self.by_bytes.setdefault(b"".join(chunk.packets), sent)

    def sent_at(self, pts: int) -> float | None:
        """Publish time of the chunk holding sample ``pts``."""
        for start in range(pts - pts % 960, pts - 5 * 960, -960):
            if start in self.by_pts:
                return self.by_pts[start]
        return None


def _ms(values: list[float], q: float = 0.5) -> str:
    if not values:
        return "—"
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:,.0f} ms"


async def ws_listener(url: str, space: str, clock: Clock, delays: list[float],
                      stop_at: float) -> None:
    async with websockets.connect(url.replace("http", "ws") + f"/ws/{space}") as ws:
        while time.monotonic() < stop_at:
            try:
                msg = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            if isinstance(msg, bytes):
                chunk = Chunk.decode(msg)
                clock.add(chunk)
                delays.append(time.time() - chunk.sent_us / 1e6)


async def ogg_listener(url: str, space: str, clock: Clock, delays: list[float],
                       stop_at: float) -> None:
    buf = b""
    pages: list[tuple[float, bytes]] = []
    async with httpx.AsyncClient(timeout=10) as c, \
            c.stream("GET", f"{url}/listen/{space}.opus") as r:
        async for data in r.aiter_raw():
            now = time.time()
            buf += data
            while True:  # whole Ogg pages: 27-byte header, lacing, body
                if len(buf) < 27 or buf[:4] != b"OggS":
                    break
                n = buf[26]
                if len(buf) < 27 + n:
                    break
                lacing = buf[27:27 + n]
                size = 27 + n + sum(lacing)
                if len(buf) < size:
                    break
                body, buf = buf[27 + n:size], buf[size:]
                pages.append((now, body))
            if time.monotonic() > stop_at:
                break
    # Matched at the end: the page may come before the WebSocket's copy of its chunk.
    delays += [now - clock.by_bytes[body] for now, body in pages if body in clock.by_bytes]


async def plain_hls(url: str, space: str, name: str, clock: Clock,
                    newest: list[float], oldest: list[float], stop_at: float) -> None:
    seen: set[str] = set()
    async with httpx.AsyncClient(base_url=f"{url}/hls/{space}/", timeout=10) as c:
        while time.monotonic() < stop_at:
            r = await c.get(name)
            if r.status_code == 200:
                for line in r.text.splitlines():
                    if line.endswith(".m4s") and not line.startswith("#") and line not in seen:
                        fresh = bool(seen)  # the first listing's segments are old news
                        seen.add(line)
                        if (await c.get(line)).status_code != 200 or not fresh:
                            continue
                        k = int(line.rsplit("-", 1)[-1].split(".")[0])
                        _note(clock, k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES,
                              newest, oldest)
            await asyncio.sleep(0.25)


async def low_latency(url: str, space: str, name: str, clock: Clock, newest: list[float],
                      oldest: list[float], stop_at: float) -> None:
    async with httpx.AsyncClient(base_url=f"{url}/hls/{space}/", timeout=15) as c:
        hint: tuple[int, int, str] | None = None
        while time.monotonic() < stop_at:
            params = {}
            if hint is not None:
                params = {"_HLS_msn": str(hint[0]), "_HLS_part": str(hint[1])}
            r = await c.get(name, params=params)
            if r.status_code != 200:
                hint = None
                await asyncio.sleep(0.2)
                continue
            if hint is not None and (await c.get(hint[2])).status_code == 200:
                lo = hint[0] * SEGMENT_SAMPLES + hint[1] * PART_SAMPLES
                _note(clock, lo, lo + PART_SAMPLES, newest, oldest)
            uri = r.text.split('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="')[1].split('"')[0]
            k, j = (int(x) for x in uri.rsplit("-", 1)[-1].removesuffix(".m4s").split("."))
            hint = (k, j, uri)


def _note(clock: Clock, lo: int, hi: int, newest: list[float], oldest: list[float]) -> None:
    now = time.time()
    last, first = clock.sent_at(hi - 1), clock.sent_at(max(lo, 0))
    if last is not None:
        newest.append(now - last)
    if first is not None:
        oldest.append(now - first)


async def measure(url: str, space: str, seconds: float) -> dict[str, Any]:
    clock = Clock()
    got: dict[str, Any] = {k: [] for k in (
        "ws", "ogg", "hls_new", "hls_old", "ll_new", "ll_old", "aac_new", "aac_old",
        "aacll_new", "aacll_old")}
    warm = time.monotonic() + 3
    stop_at = warm + seconds
    tasks = [
        ws_listener(url, space, clock, got["ws"], stop_at),
        ogg_listener(url, space, clock, got["ogg"], stop_at),
        plain_hls(url, space, "opus.m3u8", clock, got["hls_new"], got["hls_old"], stop_at),
        low_latency(url, space, "opus.m3u8", clock, got["ll_new"], got["ll_old"], stop_at),
        # AAC frames are stamped with the program time they play (townhall.media.aac).
        plain_hls(url, space, "aac.m3u8", clock, got["aac_new"], got["aac_old"], stop_at),
        low_latency(url, space, "aac.m3u8", clock, got["aacll_new"], got["aacll_old"],
                    stop_at),
    ]
    with Progress(transient=True) as progress:
        bar = progress.add_task("HLS delay", total=seconds + 3)

        async def tick() -> None:
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                progress.update(bar, completed=seconds + 3 - (stop_at - time.monotonic()))

        await asyncio.gather(*tasks, tick(), return_exceptions=False)
    return got


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench hls")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    url, proc = start_server()
    space, host = live_space(url, "hls delay")
    speaker = subprocess.Popen(
        [sys.executable, "-m", "townhall", "speak", "--url", url, "--space", space,
         "--token", host, "--tone", "440", "--seconds", str(args.seconds + 40)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/hls/{space}/opus.m3u8", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("no live HLS within 60 s")
            time.sleep(0.3)
        got = asyncio.run(measure(url, space, args.seconds))
    finally:
        speaker.terminate()
        speaker.wait(10)
        stop(url, space, host, proc)

    def row(what: str, new: str, old: str | None, hold: float) -> list[str]:
        med = statistics.median(got[new]) if got[new] else float("nan")
        return [what, _ms(got[new]), _ms(got[new], 0.95), _ms(got[old]) if old else "—",
                str(len(got[new])), f"{hold:g} s",
                f"{med + hold:.1f} s" if got[new] else "—"]

    rows = [
        row("WebSocket `/ws` (chunks)", "ws", None, 0.1),
        row("Ogg `/listen/<id>.opus` (pages)", "ogg", None, 1.0),
        row("LL-HLS Opus parts (0.5 s)", "ll_new", "ll_old", 1.5),
        row("LL-HLS AAC parts (0.5 s)", "aacll_new", "aacll_old", 1.5),
        row("HLS Opus segments (2 s)", "hls_new", "hls_old", 6.0),
        row("HLS AAC segments (2 s)", "aac_new", "aac_old", 6.0),
    ]
    return {"title": "HLS delay: chunk published to client holding it, per mode",
            "command": f"python -m bench hls (--seconds {args.seconds:g}, one Space, one "
                       "tone speaker, all clients at once on loopback)",
            "columns": ["mode", "newest chunk → client p50", "p95", "oldest chunk → client "
                        "p50", "samples", "player hold-back", "behind live (p50 + hold-back)"],
            "rows": rows,
            "notes": "Delay = the client's clock when it holds the segment/part minus the "
                     "stage's publish time of the chunk (its `sent`, from the WebSocket "
                     "listener), all on one machine. Newest = the last chunk in the "
                     "segment/part, oldest = the first (its length on top). Plain HLS is "
                     "polled every 250 ms, faster than a player's reload (once per target "
                     "duration). Hold-back: what players keep buffered behind the newest "
                     "data by default (hls.js/AVPlayer: 3 target durations for HLS, "
                     "PART-HOLD-BACK for LL-HLS; the web app's WebSocket player 80 ms on a "
                     "clean link, adapting up to 600 ms; a browser's <audio> about 1 s on "
                     "the Ogg stream); the last column adds it. The AAC rendition "
                     "passes one more NATS hop and the encoder's look-ahead. "
                     "Machine shared with other engineers' work; load average in the "
                     "header."}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(result["title"])
    for r in result["rows"]:
        print(" | ".join(r))
