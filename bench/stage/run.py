"""The stage with 13 live WebRTC speakers: its CPU (share of one core) and the delay from a
speaker's frame to the chunk that carries it being published.

Each run starts `townhall serve` (the stage in its own process), puts 13 people on the
Space's stage through the HTTP API (host + 12 invited guests), connects 12 `townhall speak`
processes (tones) and one in-process aiortc probe speaker that sends 3 kHz bursts every
second, and listens on the edge's WebSocket. Stage CPU comes from /proc over the window;
delay = chunk ``sent_us`` (stage wall clock at publish) − the probe's wall clock when it
handed the burst's first frame to aiortc (same machine, same clock).

Reference, measured in the same run on the same machine: the bare codec work a stage cannot
avoid for 13 speakers — 13 PyAV Opus decodes + 14 encodes (13 returns + the program) per
20 ms frame, in a tight loop — as CPU per second of audio.

    .venv/bin/python -m bench stage      (or, without touching the README:
    .venv/bin/python -c "import sys; from bench.stage.run import main; main(sys.argv[1:])" --runs 1)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from rich.console import Console
from rich.progress import Progress

from bench._local import live_server
from bench._speakers import bring_on_stage, chunks_heard, spawn_tone_speaker, whip_publish
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.opus import OpusDecoder, OpusEncoder
from townhall.procs import stop_processes

PROBE_HZ = 3000.0
BURST_EVERY = 50   # frames: one burst a second
BURST_LEN = 5      # frames: 100 ms
TICKS = os.sysconf("SC_CLK_TCK")


class ProbeTrack(MediaStreamTrack):
    """Silence with a 3 kHz burst every second, in real time; remembers when each began."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        t = np.arange(FRAME_SAMPLES * BURST_LEN) / SAMPLE_RATE
        self.burst = (np.sin(2 * np.pi * PROBE_HZ * t) * 0.5 * 32767).astype(np.int16)
        self.n = 0
        self.start: float | None = None
        self.sent_at: list[float] = []  # wall clock of each burst's first frame

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.n * 0.020 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        k = self.n % BURST_EVERY
        if k < BURST_LEN:
            pcm = self.burst[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
            if k == 0:
                self.sent_at.append(time.time())
        else:
            pcm = np.zeros(FRAME_SAMPLES, np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.n * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.n += 1
        return frame


def probe_power(pcm: np.ndarray) -> float:
    """Goertzel-style power of the probe frequency in one frame."""
    t = np.arange(pcm.size) / SAMPLE_RATE
    ref = np.exp(-2j * np.pi * PROBE_HZ * t)
    return float(abs(np.dot(pcm.astype(np.float64), ref)) / pcm.size)


def burst_delays(chunks: list[Chunk], sent_at: list[float]) -> list[float]:
    """For each burst found in the program: publish time of its chunk − its send time."""
    decoder = OpusDecoder()
    onsets: list[float] = []
    quiet = BURST_EVERY
    for chunk in chunks:
        for pkt in chunk.packets:
            pcm = decoder.decode(pkt)
            loud = pcm.size > 0 and probe_power(pcm) > 2000.0
            if loud and quiet >= BURST_EVERY // 2:
                onsets.append(chunk.sent_us / 1e6)
            quiet = 0 if loud else quiet + 1
    delays = []
    for at in onsets:  # pair each onset with the latest burst sent before it
        before = [s for s in sent_at if s <= at]
        if before and at - before[-1] < 0.9:
            delays.append(at - before[-1])
    return delays


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stage_pid(parent: int) -> int:
    """The `--roles stage` child process of `townhall serve`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"stage" in argv:
                return int(entry)
    raise RuntimeError("no stage child process")


def reference_cpu(speakers: int, seconds: float) -> float:
    """CPU per second of audio of the bare codec work: decodes + return and program encodes."""
    frames = int(seconds * 50)
    t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * 440 * t) * 0.3 * 32767).astype(np.int16)
    packet = OpusEncoder().encode(pcm)
    decoders = [OpusDecoder() for _ in range(speakers)]
    encoders = [OpusEncoder() for _ in range(speakers + 1)]
    start = time.process_time()
    for _ in range(frames):
        for d in decoders:
            d.decode(packet)
        for e in encoders:
            e.encode(pcm)
    return (time.process_time() - start) / seconds


async def probe_and_listen(url: str, space: str, token: str, warm_s: float, window_s: float,
                           pid: int) -> tuple[list[float], float]:
    """Publish the probe, collect chunks over the window; (delays, stage CPU share)."""
    pc = RTCPeerConnection()
    probe = ProbeTrack()
    pc.addTransceiver(probe, direction="sendrecv")
    chunks: list[Chunk] = []
    try:
        await whip_publish(pc, url, space, token)
        async with chunks_heard(url, space, lambda chunk, _at: chunks.append(chunk)):
            await asyncio.sleep(warm_s)
            cpu0, t0, first = cpu_seconds(pid), time.monotonic(), len(chunks)
            await asyncio.sleep(window_s)
            share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            window = chunks[first:]
    finally:
        probe.stop()
        await pc.close()
    return burst_delays(window, probe.sent_at), share


def run_once(speakers: int, warm_s: float, window_s: float) -> tuple[list[float], float]:
    """One server, ``speakers`` live speakers; (delays, stage CPU share)."""
    logs = Path(tempfile.mkdtemp(prefix="townhall-bench-stage-"))
    procs: list[subprocess.Popen[bytes]] = []
    with live_server("stage bench") as s:
        try:
            names = [f"speaker {i}" for i in range(speakers - 1)]
            for i, token in enumerate(bring_on_stage(s.url, s.space, s.host, names)):
                procs.append(spawn_tone_speaker(s.url, s.space, token, 200 + 20 * i, 600,
                                                logs / f"speak{i}.log"))
            delays, share = asyncio.run(probe_and_listen(
                s.url, s.space, s.host, warm_s, window_s, stage_pid(s.proc.pid)))
            snap = httpx.get(f"{s.url}/api/v1/spaces/{s.space}", timeout=5).json()
            if len(snap["stage"]) != speakers:
                raise RuntimeError(f"{len(snap['stage'])} on stage, wanted {speakers}")
            return delays, share
        finally:
            stop_processes(procs)


def main(argv: list[str]) -> dict[str, Any]:
    """Repeated runs; medians; rows for bench/README.md."""
    ap = argparse.ArgumentParser(prog="bench/stage")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--speakers", type=int, default=13)
    ap.add_argument("--warm", type=float, default=6.0, help="seconds before measuring")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per run")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    console = Console()
    shares: list[float] = []
    refs: list[float] = []
    delays_ms: list[float] = []
    with Progress(console=console) as progress:
        task = progress.add_task(f"stage, {args.speakers} speakers", total=args.runs * 2)
        for _ in range(args.runs):
            refs.append(reference_cpu(args.speakers, 5.0))
            progress.advance(task)
            delays, share = run_once(args.speakers, args.warm, args.window)
            shares.append(share)
            delays_ms.extend(d * 1000 for d in delays)
            progress.advance(task)
            console.log(f"run: stage CPU {share:.1%}, reference {refs[-1]:.1%}, "
                        f"{len(delays)} bursts, median delay "
                        f"{statistics.median(delays) * 1000 if delays else float('nan'):.0f} ms")
    share, ref = statistics.median(shares), statistics.median(refs)
    med = statistics.median(delays_ms) if delays_ms else float("nan")
    p95 = float(np.percentile(delays_ms, 95)) if delays_ms else float("nan")
    rows = [["stage process, live", f"{share:.1%}", f"{share / ref:.1f}×",
             f"{med:.0f} ms", f"{p95:.0f} ms", str(len(delays_ms))],
            ["reference: bare PyAV codec loop", f"{ref:.1%}", "1.0×", "—", "—", "—"]]
    result = {
        "title": f"Stage: {args.speakers} live WebRTC speakers",
        "command": f"python -m bench stage (runs {args.runs}, speakers {args.speakers}, "
                   f"window {args.window:g} s)",
        "columns": ["what", "CPU, share of one core", "vs reference", "packet→chunk median",
                    "packet→chunk p95", "bursts measured"],
        "rows": rows,
        "notes": (f"Medians over {args.runs} run(s), {args.window:g} s each after "
                  f"{args.warm:g} s. Speakers: {args.speakers - 1} `townhall speak` processes "
                  "(tones) + one aiortc probe sending a 3 kHz burst each second, all on the "
                  f"same machine, so they compete with the stage for its {os.cpu_count()} "
                  f"CPUs (load average {load:.1f} at start). Delay = stage publish time "
                  "of the chunk holding the burst's first frame − the probe's send time: "
                  "loopback network, jitter buffer (≥ 40 ms), mixer tick and the wait for "
                  f"the chunk's 5 frames (0-80 ms). Reference = {args.speakers} Opus decodes "
                  f"+ {args.speakers + 1} encodes per 20 ms in a tight loop (PyAV), same run."),
    }
    console.print(json.dumps(result, indent=1, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
