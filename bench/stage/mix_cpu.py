"""CPU of the stage's per-Space clock work with 13 speakers: pull, mix + 13 mix-minus,
soft limiter, one Opus encode, packaging, all per 20 ms frame, as a share of one core.

Reference, measured in the same run: the same loop with one speaker (encode-dominated).
Not included: aiortc's per-speaker RTP/DTLS/Opus decode and the return-feed encodes.

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
from townhall.media.jitterbuffer import FrameBuffer
from townhall.media.mixer import level, mix
from townhall.media.opus import OpusEncoder
from townhall.media.packager import Packager


def speaker_audio(i: int, frames: int) -> list[np.ndarray]:
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * (300 + 40 * i) * t) * 0.2 * 32767).astype(np.int16)
    return [pcm[k:k + FRAME_SAMPLES] for k in range(0, pcm.size, FRAME_SAMPLES)]


def run_once(speakers: int, seconds: float) -> float:
    """CPU seconds per second of audio (share of one core) for ``seconds`` of program."""
    frames = int(seconds * 50)
    audio = {f"s{i}": speaker_audio(i, frames) for i in range(speakers)}
    buffers = {k: FrameBuffer() for k in audio}
    encoder, packager = OpusEncoder(32_000), Packager()
    start = time.process_time()
    for n in range(frames):
        for k, buf in buffers.items():
            buf.push(audio[k][n])
        pulled = {k: buf.pull() for k, buf in buffers.items()}
        result = mix(pulled, muted=set())
        for pcm in pulled.values():
            if pcm is not None:
                level(pcm)
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
