"""Join-burst load generator: N listeners opened at an offered rate on raw asyncio protocols.

Runs in its own process on its own core. Each listener records when its connection was
started, whether the server admitted it (HTTP 200 / 101) or refused it (503 and the like),
and when its first audio arrived: the first binary WebSocket frame (a chunk), or on HTTP the
first Ogg page past the header pages (granule position > 0), so Icecast's and townhall's
Ogg streams are timed alike. The same code loads both servers.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from typing import Any, cast

from bench.fanout.loadgen import frame_head, request

_CHUNK_SEQ = struct.Struct(">4sQ")
_GRANULE = struct.Struct("<q")
MAX_HEAD = 64 * 1024


class Joiner(asyncio.Protocol):
    """One joining listener: status, time to first audio, then (ws) sequence continuity."""

    def __init__(self, mode: str, req: bytes, started: float) -> None:
        self.mode = mode
        self.req = req
        self.started = started
        self.status = 0
        self.first_audio: float | None = None
        self.gaps = 0
        self.last_seq = -1
        self.buf = bytearray()
        self.head_done = False
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.req)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            parts = bytes(self.buf[:16]).split(b" ")
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            if self.status not in (101, 200):
                self._settle()
                if self.transport is not None:
                    self.transport.close()
                return
            self.head_done = True
            del self.buf[:end + 4]
        if self.mode == "ws":
            self._frames()
        elif self.first_audio is None:
            self._ogg_pages()
        else:
            self.buf.clear()

    def _audio(self) -> None:
        if self.first_audio is None:
            self.first_audio = time.monotonic()
            self._settle()

    def _ogg_pages(self) -> None:
        at = 0
        while True:
            at = self.buf.find(b"OggS", at)
            if at < 0 or len(self.buf) < at + 14:
                break
            if _GRANULE.unpack_from(self.buf, at + 6)[0] > 0:
                self._audio()
                self.buf.clear()
                return
            at += 4
        if len(self.buf) > MAX_HEAD:
            del self.buf[:-16]

    def _frames(self) -> None:
        buf = self.buf
        while (head := frame_head(buf)) is not None:
            opcode, off, size = head
            if opcode == 2 and size >= _CHUNK_SEQ.size:
                seq = _CHUNK_SEQ.unpack_from(buf, off)[1]
                if self.last_seq >= 0 and seq != self.last_seq + 1:
                    self.gaps += 1
                self.last_seq = seq
                self._audio()
            elif opcode == 8 and self.first_audio is None:  # refused after the upgrade
                code = struct.unpack_from(">H", buf, off)[0] if size >= 2 else 1005
                self.status = code  # e.g. 4503: edge full
                self._settle()
            del buf[:off + size]


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


async def _burst(mode: str, host: str, port: int, path: str, n: int, rate: float,
                 hold_s: float, window: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    joiners: list[Joiner] = []
    errors = 0

    async def open_one(j: Joiner) -> None:
        nonlocal errors
        try:
            await loop.create_connection(lambda: j, host, port)
        except OSError:
            errors += 1
            j._settle()

    window.put(("start", time.monotonic()))
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        j = Joiner(mode, request(mode, host, port, path), time.monotonic())
        joiners.append(j)
        tasks.append(asyncio.ensure_future(open_one(j)))
    await asyncio.wait({j.done for j in joiners}, timeout=30)
    window.put(("end", time.monotonic()))
    admitted = [j for j in joiners if j.first_audio is not None]
    ends = [j.first_audio for j in admitted if j.first_audio is not None]
    span = (max(ends) - t0) if ends else 0.0
    ttfa = [(j.first_audio - j.started) * 1000 for j in admitted if j.first_audio is not None]
    await asyncio.sleep(hold_s)  # admitted listeners keep listening: count gaps meanwhile
    for j in joiners:
        if j.transport is not None:
            j.transport.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"offered": n, "admitted": len(admitted),
            "refused": sum(1 for j in joiners if j.status not in (0, 101, 200)),
            "no_audio": sum(1 for j in joiners if j.status in (101, 200)
                            and j.first_audio is None),
            "errors": errors, "span_s": span,
            "joins_per_s": len(admitted) / span if span > 0 else 0.0,
            "ttfa_p50_ms": _pct(ttfa, 50), "ttfa_p99_ms": _pct(ttfa, 99),
            "gaps": sum(j.gaps for j in admitted)}


def main(mode: str, host: str, port: int, path: str, n: int, rate: float, hold_s: float,
         cpu: int | None, window: Any, out: Any) -> None:
    """Process entry point: marks the join window on ``window``, puts one result on ``out``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop
        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    out.put(run(_burst(mode, host, port, path, n, rate, hold_s, window)))
