"""CPU of the stage's per-Space clock work with 13 speakers: jitter buffer + Opus decode
per speaker (Playout), mix + 13 mix-minus, soft limiter, levels, one Opus encode,
packaging, all per 20 ms frame, as a share of one core.

Reference, measured in the same run: the same loop with one speaker (encode-dominated).
Not included: aiortc's per-speaker RTP/DTLS and the return-feed encodes (bench/stage/run.py
measures the live stage process with all of it).

    .venv/bin/python bench/stage/mix_cpu.py [--runs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.levels import LevelMeter
from townhall.media.mixer import mix
from townhall.media.opus import OpusEncoder
from townhall.media.packager import Packager
from townhall.media.playout import Playout


def speaker_packets(i: int, frames: int) -> list[bytes]:
    """A speaker's tone as the Opus packets their browser would send."""
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * (300 + 40 * i) * t) * 0.2 * 32767).astype(np.int16)
    enc = OpusEncoder(32_000)
    return [enc.encode(pcm[k:k + FRAME_SAMPLES]) for k in range(0, pcm.size, FRAME_SAMPLES)]


def run_once(speakers: int, seconds: float) -> float:
    """CPU seconds per second of audio (share of one core) for ``seconds`` of program."""
    frames = int(seconds * 50)
    audio = {f"s{i}": speaker_packets(i, frames) for i in range(speakers)}
    playouts = {k: Playout() for k in audio}
    encoder, packager, meter = OpusEncoder(32_000), Packager(), LevelMeter()
    start = time.process_time()
    for n in range(frames):
        for k, po in playouts.items():
            po.push(n & 0xFFFF, audio[k][n], now=n * 0.020)
        pulled = {k: po.pull() for k, po in playouts.items()}
        result = mix(pulled, muted=set())
        for k, pcm in pulled.items():
            meter.add(k, pcm)
        meter.report("bench", pulled, now=n * 0.020, wall=n * 0.020)
        packager.add(encoder.encode(result.program), now_us=n)
    return (time.process_time() - start) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    results: dict[int, list[float]] = {1: [], 13: []}
    with Progress() as progress:
        task = progress.add_task("mixing", total=args.runs * 2)
        for _ in range(args.runs):
            for n in (1, 13):
                results[n].append(run_once(n, args.seconds))
                progress.advance(task)
    one, thirteen = statistics.median(results[1]), statistics.median(results[13])
    table = Table(title=f"stage mix CPU, median of {args.runs} runs × {args.seconds:g} s "
                        f"({platform.processor() or platform.machine()}, "
                        f"Python {platform.python_version()})")
    table.add_column("speakers")
    table.add_column("share of one core", justify="right")
    table.add_column("vs 1 speaker", justify="right")
    table.add_row("1 (reference)", f"{one:.1%}", "1.00×")
    table.add_row("13", f"{thirteen:.1%}", f"{thirteen / one:.2f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
