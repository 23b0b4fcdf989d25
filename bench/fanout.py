"""Edge fan-out benchmark: one edge process, a load generator in another process.

    .venv/bin/python bench/fanout.py --listeners 1000,5000 --seconds 20 --runs 3

Starts nats-server and `townhall serve --roles api,edge`, creates a live Space, publishes
one chunk every 100 ms (5 packets of 80 bytes ≈ 32 kbps, the size of the real stream; the
edge never decodes Opus) and connects N WebSocket listeners from a separate process. Per
run it reports the edge's CPU milliseconds per listener-minute (from /proc), its memory
per connection (RSS growth / N), stalls (a listener's sequence gap, or a chunk more than
1 s late) and p99 delay from publish to receipt. Prints medians over runs as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from townhall.bus import Bus, subjects
from townhall.bus.embedded import EmbeddedNats, free_port
from townhall.media.chunk import Chunk

console = Console()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _listen(url: str, n: int, seconds: float, ready: Any, out: Any) -> None:
    from websockets.asyncio.client import connect

    delays: list[float] = []
    gaps = 0
    late = 0
    connected = 0

    async def one() -> None:
        nonlocal gaps, late, connected
        async with connect(url, open_timeout=120, max_queue=64) as ws:
            connected += 1
            last = None
            deadline = time.monotonic() + seconds + 120
            while time.monotonic() < deadline:
                msg = await ws.recv()
                if not isinstance(msg, bytes):
                    continue
                head = Chunk.decode(msg)
                now_us = time.time() * 1e6
                if measuring:
                    d = (now_us - head.sent_us) / 1e6
                    delays.append(d)
                    late += d > 1.0
                    if last is not None and head.seq != last + 1:
                        gaps += 1
                last = head.seq
                if stop:
                    return

    measuring = False
    stop = False
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one()))
        if i % 200 == 199:
            await asyncio.sleep(0.25)  # stay under the edge's join rate
    while connected < n:
        await asyncio.sleep(0.2)
        if all(t.done() for t in tasks):
            break
    ready.set()
    await asyncio.sleep(1.0)
    measuring = True
    await asyncio.sleep(seconds)
    measuring = False
    stop = True
    delays.sort()
    p99 = delays[int(len(delays) * 0.99)] if delays else float("nan")
    out.put({"connected": connected, "p99": p99, "stalls": gaps + late,
             "received": len(delays)})
    for t in tasks:
        t.cancel()


def load_generator(url: str, n: int, seconds: float, ready: Any, out: Any) -> None:
    """Runs in its own process: N listeners, then one result on ``out``."""
    asyncio.run(_listen(url, n, seconds, ready, out))


async def produce(bus: Bus, space: str, stop: asyncio.Event) -> None:
    seq, pts = 1, 0
    while not stop.is_set():
        chunk = Chunk(seq=seq, pts=pts, sent_us=int(time.time() * 1e6),
                      packets=tuple(bytes([seq % 256]) * 80 for _ in range(5)))
        await bus.publish(subjects.media(space), chunk.encode())
        seq += 1
        pts += 4800
        await asyncio.sleep(0.1)


async def one_run(url: str, nats_url: str, pid: int, n: int, seconds: float
                  ) -> dict[str, float]:
    bus = await Bus.connect([nats_url])
    # The edge alone (no api): the Space's live snapshot goes straight into KV.
    space = f"bench{n:05d}"[:10]
    snap = {"id": space, "title": "bench", "state": "live", "version": 1, "private": False,
            "stage": [], "requests": [], "invites": [], "listeners": 0, "reactions": {}}
    await bus.kv_put(subjects.SPACES_BUCKET, space, json.dumps(snap).encode())
    stop = asyncio.Event()
    producer = asyncio.ensure_future(produce(bus, space, stop))
    await asyncio.sleep(1.0)
    rss0 = proc_rss_mb(pid)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    gen = ctx.Process(target=load_generator,
                      args=(f"{url.replace('http', 'ws')}/ws/{space}", n, seconds, ready, out))
    gen.start()
    await asyncio.to_thread(ready.wait, 600)
    await asyncio.sleep(1.0)
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    rss1 = proc_rss_mb(pid)
    await asyncio.sleep(seconds)
    cpu1, t1 = proc_cpu_s(pid), time.monotonic()
    result = await asyncio.to_thread(out.get, True, seconds + 120)
    gen.join(30)
    stop.set()
    await producer
    await bus.close()
    minutes = (t1 - t0) / 60
    return {"cpu_ms_per_listener_min": (cpu1 - cpu0) * 1000 / (n * minutes),
            "edge_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
            "kb_per_conn": (rss1 - rss0) * 1024 / n, "p99_ms": result["p99"] * 1000,
            "stalls": result["stalls"], "connected": result["connected"]}


def wait_healthy(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError("edge not healthy")


def start_edge(nats_url: str, port: int, data: Path, capacity: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TOWNHALL_EDGE_CAPACITY": str(capacity),
           "TOWNHALL_EDGE_JOIN_RATE": "2000"}
    return subprocess.Popen([sys.executable, "-m", "townhall", "serve", "--roles", "edge",
                             "--nats", nats_url, "--port", str(port), "--data", str(data)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in args.listeners.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(Path(tmp) / "nats")
        nats_url = nats.start()
        port = free_port()
        edge = await asyncio.to_thread(start_edge, nats_url, port, Path(tmp) / "data",
                                       max(sizes) + 100)
        url = f"http://127.0.0.1:{port}"
        try:
            await asyncio.to_thread(wait_healthy, url)
            rows: dict[int, list[dict[str, float]]] = {}
            with Progress(console=console) as progress:
                task = progress.add_task("fan-out runs", total=len(sizes) * args.runs)
                for n in sizes:
                    for _ in range(args.runs):
                        rows.setdefault(n, []).append(
                            await one_run(url, nats_url, edge.pid, n, args.seconds))
                        progress.advance(task)
        finally:
            edge.send_signal(signal.SIGTERM)
            await asyncio.to_thread(edge.wait, 30)
            nats.stop()
    table = Table(title=f"edge fan-out, median of {args.runs} run(s) of {args.seconds:.0f} s")
    keys = ["connected", "cpu_ms_per_listener_min", "edge_cpu_pct", "kb_per_conn",
            "p99_ms", "stalls"]
    table.add_column("listeners")
    for k in keys:
        table.add_column(k)
    summary = {}
    for n, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        summary[n] = med
        table.add_row(str(n), *[f"{med[k]:.1f}" for k in keys])
    console.print(table)
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", default="1000,5000,10000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
