"""Mouth to ear: a speaker's tone burst to the moment a WebSocket listener can play it.

Each run starts `townhall serve` (stage in its own process), puts one aiortc speaker on a
live Space (the `townhall speak` source: our own Opus encoder with in-band FEC, real-time
pacing) sending a 100 ms 1 kHz burst every 1.02 s, and a WebSocket listener on loopback
(`/ws/<id>`, the edge role in the same `townhall serve`). For every burst:

- mouth = wall clock when the burst's first 20 ms frame was handed to aiortc (a real
  microphone adds its own capture buffer, 10-20 ms, before that);
- publish = the stage's wall clock when it published the chunk holding the burst's onset
  (``Chunk.sent_us``, same machine and clock);
- ear = wall clock when that chunk reached the listener + the onset's position in the
  chunk (a player with no buffer of its own, playing each chunk as it arrives); the onset
  is the first decoded sample above a quarter of the burst's amplitude.

The stage's jitter buffer target is read from the api's /metrics during the run
(``townhall_stage_jitter_target_ms``).

    .venv/bin/python -m bench latency          (writes its table into bench/README.md)
    .venv/bin/python -m bench.latency.run --runs 1   (prints only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
from typing import Any, NamedTuple

import httpx
import numpy as np
from aiortc import RTCPeerConnection
from rich.console import Console
from rich.progress import Progress, TaskID

from bench._local import live_server
from bench._speakers import chunks_heard, whip_publish
from townhall.cli.speak import SPEAKER_BITRATE, SourceTrack
from townhall.media.chunk import SAMPLE_RATE, Chunk
from townhall.media.opus import OpusDecoder

BURST_HZ = 1000.0
BURST_S = 0.100
PERIOD_S = 1.02  # 51 frames: successive onsets walk through the 5 places in a chunk
AMPLITUDE = 0.5
THRESHOLD = AMPLITUDE * 32767 * 0.25


def burst_period() -> np.ndarray:
    """One period of the probe: a 100 ms 1 kHz burst, then silence (looped by the track)."""
    pcm = np.zeros(int(SAMPLE_RATE * PERIOD_S), np.int16)
    t = np.arange(int(SAMPLE_RATE * BURST_S)) / SAMPLE_RATE
    pcm[:t.size] = (np.sin(2 * np.pi * BURST_HZ * t) * AMPLITUDE * 32767).astype(np.int16)
    return pcm


class ProbeSource(SourceTrack):
    """`townhall speak`'s source track, noting the wall clock of each burst's first frame."""

    def __init__(self) -> None:
        super().__init__(burst_period())
        self.sent_at: list[float] = []

    async def _next_frame(self) -> Any:
        starts_burst = self._pos == 0
        frame = await super()._next_frame()  # returns when the frame is due (real time)
        if starts_burst:
            self.sent_at.append(time.time())
        return frame


# NamedTuples and plain classes, not dataclasses: `python -m bench` loads this file
# without registering it in sys.modules, which dataclasses need to resolve annotations.
class Onset(NamedTuple):
    """A burst as the listener found it."""

    ear: float       # wall clock the listener could play the onset sample
    publish: float   # stage wall clock when the chunk holding it was published
    arrival: float   # wall clock the chunk reached the listener
    offset_s: float  # the onset's position in its chunk


class Listener:
    """Decodes the program as chunks arrive and finds each burst's onset."""

    def __init__(self) -> None:
        self.decoder = OpusDecoder()
        self.onsets: list[Onset] = []
        self.quiet_samples = SAMPLE_RATE  # since the last loud sample

    def add(self, chunk: Chunk, arrival: float) -> None:
        pcm = np.concatenate([self.decoder.decode(p) for p in chunk.packets])
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)
        if loud.size:
            first = int(loud[0])
            if self.quiet_samples + first > SAMPLE_RATE * PERIOD_S / 2:
                offset = first / SAMPLE_RATE
                self.onsets.append(Onset(arrival + offset, chunk.sent_us / 1e6, arrival,
                                         offset))
            self.quiet_samples = pcm.size - 1 - int(loud[-1])
        else:
            self.quiet_samples += pcm.size


class Burst(NamedTuple):
    """One burst, mouth to ear, in seconds."""

    mouth_to_ear: float
    mouth_to_publish: float
    publish_to_arrival: float
    in_chunk: float


def pair(sent_at: list[float], onsets: list[Onset]) -> list[Burst]:
    """Each onset with the latest burst sent before it (less than one period earlier)."""
    out = []
    for o in onsets:
        before = [s for s in sent_at if s <= o.ear]
        if before and o.ear - before[-1] < PERIOD_S:
            mouth = before[-1]
            out.append(Burst(o.ear - mouth, o.publish - mouth, o.arrival - o.publish,
                             o.offset_s))
    return out


async def jitter_target_ms(url: str, http: httpx.AsyncClient) -> float | None:
    """The stage's deepest speaker jitter buffer target, from the api's /metrics."""
    with contextlib.suppress(httpx.HTTPError):
        text = (await http.get(f"{url}/metrics")).text
        m = re.search(r'^townhall_stage_jitter_target_ms\{node="[^"]+"\} (\S+)$', text, re.M)
        if m:
            return float(m.group(1))
    return None


async def measure(url: str, space: str, token: str, bursts: int, progress: Progress,
                  task: TaskID) -> tuple[list[Burst], list[float]]:
    """Listen, then speak until ``bursts`` bursts were heard (bounded); (bursts, targets)."""
    listener = Listener()
    targets: list[float] = []
    pc = RTCPeerConnection()
    probe = ProbeSource()
    pc.addTransceiver(probe, direction="sendrecv")
    try:
        async with chunks_heard(url, space, listener.add), \
                httpx.AsyncClient(timeout=20) as http:
            await whip_publish(pc, url, space, token)
            deadline = time.monotonic() + bursts * PERIOD_S * 2 + 30
            skip = 3  # the first bursts meet a jitter buffer still settling
            got: list[Burst] = []
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                got = pair(probe.sent_at, listener.onsets)[skip:]
                progress.update(task, completed=min(len(got), bursts))
                target = await jitter_target_ms(url, http)
                if target:
                    targets.append(target)
                if len(got) >= bursts:
                    return got[:bursts], targets
            raise RuntimeError(f"only {len(got)} of {bursts} bursts heard in time")
    finally:
        probe.stop()
        await pc.close()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str]) -> dict[str, Any]:
    """Repeated runs, each its own server; per-run p50/p95/max, then medians over runs."""
    ap = argparse.ArgumentParser(prog="bench/latency")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bursts", type=int, default=30, help="bursts measured per run")
    args = ap.parse_args(argv)
    console = Console()
    load = os.getloadavg()[0]
    per_run: list[dict[str, float]] = []
    targets: list[float] = []
    with Progress(console=console) as progress:
        for run in range(args.runs):
            task = progress.add_task(f"run {run + 1}/{args.runs}: bursts heard",
                                     total=args.bursts)
            with live_server("latency bench") as s:
                bursts, run_targets = asyncio.run(
                    measure(s.url, s.space, s.host, args.bursts, progress, task))
            targets += run_targets
            m2e = [b.mouth_to_ear * 1000 for b in bursts]
            row = {"p50": pct(m2e, 50), "p95": pct(m2e, 95), "max": max(m2e),
                   "stage_p50": pct([b.mouth_to_publish * 1000 for b in bursts], 50),
                   "stage_p95": pct([b.mouth_to_publish * 1000 for b in bursts], 95),
                   "edge_p50": pct([b.publish_to_arrival * 1000 for b in bursts], 50),
                   "edge_p95": pct([b.publish_to_arrival * 1000 for b in bursts], 95),
                   "chunk_p50": pct([b.in_chunk * 1000 for b in bursts], 50)}
            per_run.append(row)
            console.log(f"run {run + 1}: mouth→ear p50 {row['p50']:.0f} ms, p95 "
                        f"{row['p95']:.0f} ms, max {row['max']:.0f} ms; stage part p50 "
                        f"{row['stage_p50']:.0f} ms; edge p50 {row['edge_p50']:.0f} ms")

    def med(key: str) -> float:
        return statistics.median(r[key] for r in per_run)

    target = statistics.median(targets) if targets else float("nan")
    rows = [
        ["speaker → WebSocket listener (mouth → ear)", f"{med('p50'):.0f} ms",
         f"{med('p95'):.0f} ms", f"{med('max'):.0f} ms"],
        ["  of which speaker → chunk published (stage)", f"{med('stage_p50'):.0f} ms",
         f"{med('stage_p95'):.0f} ms", "—"],
        ["  of which chunk published → listener (edge)", f"{med('edge_p50'):.0f} ms",
         f"{med('edge_p95'):.0f} ms", "—"],
        ["  of which onset's place in its 100 ms chunk", f"{med('chunk_p50'):.0f} ms",
         "—", "—"],
        ["stage jitter buffer target (from /metrics)", f"{target:.0f} ms", "—", "—"],
    ]
    result = {
        "title": "Mouth to ear: speaker to WebSocket listener on loopback",
        "command": f"python -m bench latency (runs {args.runs}, bursts {args.bursts} per run)",
        "columns": ["what", "p50", "p95", "max"],
        "rows": rows,
        "notes": (
            "Target (docs/architecture.md, Targets): p95 ≤ 400 ms. Medians over "
            f"{args.runs} runs of each run's percentile over {args.bursts} bursts (1 kHz, "
            "100 ms, one every 1.02 s so onsets fall on every place in a chunk; the first "
            "3 of each run skipped while the jitter buffer settles). One aiortc speaker "
            f"with `townhall speak`'s encoder (Opus {SPEAKER_BITRATE // 1000} kbit/s, "
            "in-band FEC); stage, edge, "
            f"api and listener on one machine, {os.cpu_count()} CPUs shared with other "
            f"work (load average {load:.1f} at start): CPU contention is in the figures. "
            "Mouth = the frame handed to aiortc (a microphone's capture buffer comes on "
            "top); ear = chunk arrival + the onset's place in the chunk (a player's own "
            "buffer comes on top). Chunking costs a constant ~one chunk (100 ms): an onset "
            "early in a chunk waits longer for the publish, one late in it plays later "
            "after arrival. The rest of the stage's part: jitter buffer, the 20 ms tick, two "
            "Opus lookaheads (speaker's and program's encoder)."),
    }
    console.print(json.dumps(result, indent=1, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
