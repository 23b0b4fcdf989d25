"""Profile one edge taking a join burst: `townhall serve --roles edge` under cProfile.

Usage: `.venv/bin/python bench/joinstorm/profile.py [--mode ws|http] [--burst N] [--rate R]`.
Starts NATS, a live Space fed with Opus, an edge process run under cProfile, then a rawjoin
burst against it; stops the edge (SIGTERM, so the profile is written) and prints the top
functions by cumulative and by own time. Not a benchmark: cProfile slows the edge several-fold.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from bench.fanout import servers  # noqa: E402
from bench.joinstorm import rawjoin  # noqa: E402
from townhall.bus import NatsBus  # noqa: E402
from townhall.bus.embedded import EmbeddedNats, free_port  # noqa: E402
from townhall.procs import stop_process  # noqa: E402

SPACE = "benchprof01"

# Runs in the edge process: SIGTERM becomes SystemExit (uvicorn restores this handler and
# re-raises the signal after its shutdown), so the finally clause writes the profile.
_WRAPPER = """
import cProfile, signal, sys
def _exit(signum, frame):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, _exit)
from townhall.cli.main import main
prof = cProfile.Profile()
try:
    prof.runcall(main, sys.argv[2:])
except SystemExit:
    pass
finally:
    prof.dump_stats(sys.argv[1])
"""


def _start_edge(out: Path, nats_url: str, port: int, work: Path,
                env: dict[str, str]) -> tuple[Any, subprocess.Popen[bytes]]:
    """The edge process, profiled into ``out``; its log goes to work/edge.log."""
    log = open(work / "edge.log", "wb")  # kept open for the child
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, str(out), "serve", "--roles", "edge",
         "--nats", nats_url, "--port", str(port), "--data", str(work / "data"),
         "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
    return log, proc


async def _profile(args: argparse.Namespace, work: Path) -> Path:
    out = work / "edge.prof"
    nats = EmbeddedNats(work / "nats")
    bus = await NatsBus.connect([nats.start()])
    try:
        await servers.live_space(bus, SPACE)
        source = servers.Source(bus, SPACE)
        feeding = asyncio.ensure_future(source.run())
        port = free_port()
        env = {**os.environ, "TOWNHALL_EDGE_CAPACITY": str(args.burst),
               "TOWNHALL_EDGE_JOIN_RATE": "5000"}
        log, proc = await asyncio.to_thread(_start_edge, out, nats.url, port, work, env)
        try:
            await asyncio.to_thread(servers.wait_http, f"http://127.0.0.1:{port}/healthz")
            await asyncio.sleep(1.5)
            path = f"/ws/{SPACE}" if args.mode == "ws" else f"/listen/{SPACE}.opus"
            ctx = mp.get_context("spawn")
            window, result_q = ctx.Queue(), ctx.Queue()
            gen: Any = ctx.Process(target=rawjoin.main, args=(
                args.mode, "127.0.0.1", port, path, args.burst, args.rate, 2.0, None,
                window, result_q))
            gen.start()
            await asyncio.to_thread(window.get, True, 60)
            await asyncio.to_thread(window.get, True, 180)
            result = await asyncio.to_thread(result_q.get, True, 60)
            await asyncio.to_thread(gen.join, 20)
            print({k: v for k, v in result.items() if not isinstance(v, list)})
        finally:
            feeding.cancel()
            # SIGTERM makes the profiled edge write its profile: give it time.
            await asyncio.to_thread(stop_process, proc, 30)
            log.close()
    finally:
        await bus.close()
        await asyncio.to_thread(nats.stop)
    return out


def main() -> int:
    """Run the burst under the profiler and print the hottest functions."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=["ws", "http"], default="ws")
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="townhall-prof-"))
    out = asyncio.run(_profile(args, work))
    if not out.exists():
        print(f"no profile written; edge log in {work / 'edge.log'}")
        return 1
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"profile: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
