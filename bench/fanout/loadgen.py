"""Fan-out load generator: N streaming listeners on raw asyncio protocols, in its own process.

The same client code loads townhall and Icecast: ``http`` mode sends one GET and counts
body bytes (an Ogg stream from either server); ``ws`` mode opens a WebSocket, parses frame
headers and reads each binary frame's chunk sequence number and send time (gaps, delay).
Per-message work is a few integer operations so the generator is not the bottleneck the
websockets-library client was.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, cast

STALL_S = 1.0      # no data for this long while measuring = a stall
_CHUNK_HEAD = struct.Struct(">4sQQQ")


@dataclass
class Tally:
    """What all listeners of this process saw while measuring."""

    connected: int = 0
    refused: int = 0
    closed_early: int = 0
    stalls: int = 0
    gaps: int = 0
    frames: int = 0
    bytes: int = 0
    delays_ms: list[float] = field(default_factory=list)
    measuring: bool = False
    stall_s: float = STALL_S   # silence longer than this is a stall (past the page interval)


class Listener(asyncio.Protocol):
    """One listener; ``ws`` parses frames, ``http`` only counts body bytes."""

    def __init__(self, mode: str, request: bytes, tally: Tally) -> None:
        self.mode = mode
        self.request = request
        self.tally = tally
        self.buf = bytearray()
        self.head_done = False
        self.last_rx = 0.0
        self.last_seq = -1
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_done:
            self.tally.closed_early += 1
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        tally = self.tally
        if tally.measuring and self.last_rx and now - self.last_rx > tally.stall_s:
            tally.stalls += 1
        self.last_rx = now
        if not self.head_done:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:12])
            if b" 200" not in status and b" 101" not in status:
                tally.refused += 1
                if self.transport is not None:
                    self.transport.close()
                return
            self.head_done = True
            tally.connected += 1
            data = bytes(self.buf[end + 4:])
            self.buf.clear()
        if tally.measuring:
            tally.bytes += len(data)
        if self.mode == "ws":
            self.buf += data
            self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self.buf
        tally = self.tally
        while (head := frame_head(buf)) is not None:
            opcode, off, size = head
            if opcode == 2 and size >= _CHUNK_HEAD.size:
                _, seq, _, sent_us = _CHUNK_HEAD.unpack_from(buf, off)
                if tally.measuring:
                    tally.frames += 1
                    tally.delays_ms.append(time.time() * 1000 - sent_us / 1000)
                    if self.last_seq >= 0 and seq != self.last_seq + 1:
                        tally.gaps += 1
                self.last_seq = seq
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
            del buf[:off + size]


def frame_head(buf: bytearray) -> tuple[int, int, int] | None:
    """(opcode, payload offset, payload size) of the unmasked frame at the start of ``buf``,
    or None until the whole frame is there."""
    if len(buf) < 2:
        return None
    opcode, size, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if size == 126:
        if len(buf) < 4:
            return None
        size, off = struct.unpack_from(">H", buf, 2)[0], 4
    elif size == 127:
        if len(buf) < 10:
            return None
        size, off = struct.unpack_from(">Q", buf, 2)[0], 10
    return None if len(buf) < off + size else (opcode, off, size)


def request(mode: str, host: str, port: int, path: str) -> bytes:
    """The bytes that open one listener."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: fanout-loadgen"]
    if mode == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _run(mode: str, host: str, port: int, path: str, n: int, join_rate: float,
               settle_s: float, seconds: float, cpu: int | None, window: Any,
               stall_s: float = STALL_S) -> dict[str, Any]:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop = asyncio.get_running_loop()
    tally = Tally(stall_s=stall_s)
    listeners: list[Listener] = []
    started = time.monotonic()
    for i in range(n):
        proto = Listener(mode, request(mode, host, port, path), tally)
        try:
            await loop.create_connection(lambda p=proto: p, host, port)  # type: ignore[misc]
        except OSError:
            tally.refused += 1
            continue
        listeners.append(proto)
        ahead = (i + 1) / join_rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    join_s = time.monotonic() - started
    await asyncio.sleep(settle_s)
    tally.measuring = True
    window.put(("start", time.monotonic()))  # the caller samples server CPU and RSS now
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    tally.measuring = False
    window.put(("end", time.monotonic()))
    now = time.monotonic()
    for proto in listeners:  # a listener silent up to the end also stalled
        if proto.head_done and proto.last_rx and now - proto.last_rx > tally.stall_s:
            tally.stalls += 1
    for proto in listeners:
        if proto.transport is not None:
            proto.head_done = False  # our own close is not "closed early"
            proto.transport.close()
    delays = sorted(tally.delays_ms)
    return {"connected": tally.connected, "refused": tally.refused,
            "closed_early": tally.closed_early, "stalls": tally.stalls, "gaps": tally.gaps,
            "frames": tally.frames, "bytes": tally.bytes, "seconds": now - t0,
            "join_s": join_s,
            "p50_ms": delays[len(delays) // 2] if delays else None,
            "p99_ms": delays[int(len(delays) * 0.99)] if delays else None}


def main(mode: str, host: str, port: int, path: str, n: int, join_rate: float,
         settle_s: float, seconds: float, cpu: int | None, window: Any, out: Any,
         stall_s: float = STALL_S) -> None:
    """Process entry point: marks the window on ``window``, puts one result on ``out``."""
    try:  # uvloop (installed with uvicorn[standard]) keeps the generator off the critical path
        import uvloop
        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    out.put(run(_run(mode, host, port, path, n, join_rate, settle_s, seconds, cpu, window,
                     stall_s)))
