"""``townhall listen``: record what a listener hears and report its continuity."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

from townhall.client.listener import ListenError, ListenStats, ResilientListener
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk


class WavRecorder:
    """Decodes chunks with libopus (PyAV) into a mono 48 kHz 16-bit WAV file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._wav: wave.Wave_write | None = None
        if path is not None:
            self._wav = wave.open(str(path), "wb")
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(SAMPLE_RATE)
        dec: Any = av.CodecContext.create("opus", "r")
        dec.sample_rate = SAMPLE_RATE
        dec.layout = "mono"
        self._dec = dec
        self._last_seq: int | None = None
        self._per_chunk = 5
        self.delays_s: list[float] = []

    def on_chunk(self, chunk: Chunk) -> None:
        """Write the chunk's audio, with silence standing in for chunks never heard."""
        self.delays_s.append(max(0.0, time.time() - chunk.sent_us / 1e6))
        self._per_chunk = len(chunk.packets) or self._per_chunk
        if self._wav is None:
            self._last_seq = chunk.seq
            return
        if self._last_seq is not None and chunk.seq > self._last_seq + 1:
            missing = chunk.seq - self._last_seq - 1
            self._wav.writeframes(bytes(2 * FRAME_SAMPLES * self._per_chunk * missing))
        self._last_seq = chunk.seq
        for packet in chunk.packets:
            for frame in self._dec.decode(av.Packet(packet)):
                pcm = frame.to_ndarray().reshape(-1)
                if pcm.dtype != np.int16:
                    pcm = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
                self._wav.writeframes(pcm.tobytes())

    def close(self) -> None:
        """Finish the WAV file, if one is being written."""
        if self._wav is not None:
            self._wav.close()


def summary(stats: ListenStats, delays_s: list[float], seconds: float) -> str:
    """The continuity report a person reads."""
    lines = [f"listened {seconds:.1f} s: {stats.chunks} chunks, "
             f"seq {stats.first_seq}..{stats.last_seq}",
             f"gaps: {stats.missing} chunks missing; skips: {stats.skipped} chunks skipped "
             f"by the edge; reconnects: {stats.reconnects}; refusals: {stats.refusals}"]
    if stats.outages_s:
        lines.append("outages: " + ", ".join(f"{o:.2f} s" for o in stats.outages_s))
    if delays_s:
        ordered = sorted(delays_s)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        lines.append(f"delay behind live: median {statistics.median(ordered) * 1000:.0f} ms, "
                     f"p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")
    if stats.ended:
        lines.append("the Space ended")
    return "\n".join(lines)


async def _listen(args: argparse.Namespace) -> int:
    recorder = WavRecorder(Path(args.out) if args.out else None)
    listener = ResilientListener(args.url, args.space, token=args.token,
                                 on_chunk=recorder.on_chunk)
    stop = asyncio.Event()
    started = time.monotonic()
    timer = asyncio.get_running_loop().call_later(args.seconds, stop.set) \
        if args.seconds else None
    try:
        stats = await listener.run(stop)
    except ListenError as exc:
        print(f"townhall listen: {exc}", file=sys.stderr)
        return 1
    finally:
        if timer is not None:
            timer.cancel()
        recorder.close()
    print(summary(stats, recorder.delays_s, time.monotonic() - started))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_listen(args))
    return 130


def add_parser(sub: Any) -> None:
    """Register ``townhall listen``."""
    p = sub.add_parser("listen", help="listen to a Space, record it, report gaps and delay")
    p.add_argument("--url", required=True, help="base URL of townhall (the api)")
    p.add_argument("--space", required=True, help="Space id")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="stop after this many seconds (default: until the Space ends)")
    p.add_argument("--out", default="", help="write what was heard to this WAV file")
    p.add_argument("--token", default=None, help="listener token for a private Space")
    p.set_defaults(func=_run)
