"""Join storm at one edge: admitted joins/s, time to first audio, and 5x overload.

Two parts. (1) Bursts at one edge process pinned to one core, against Debian's Icecast 2
pinned the same way in the same run, both fed the same Ogg/Opus source (bench/fanout's
servers) and loaded by the same raw-asyncio joiner (rawjoin.py) on the other core: admitted
joins per second, joins per server CPU-second, time to first audio, and a 5x overload of
townhall's cap. (2) The whole `townhall serve` under `townhall storm` (real clients that
retry with backoff) at capacity and at 5x overload.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from bench._local import live_space, start_server  # noqa: E402
from bench.fanout import servers  # noqa: E402
from bench.joinstorm import rawjoin  # noqa: E402
from townhall.bus import Bus, NatsBus  # noqa: E402
from townhall.bus.embedded import EmbeddedNats  # noqa: E402
from townhall.procs import stop_process  # noqa: E402
from townhall.storm.run import StormArgs, storm  # noqa: E402

SERVER_CPU, LOADGEN_CPU = 0, 1
SPACE = "benchjoin01"


async def _burst_once(kind: str, n: int, cap: int, rate: float, bus: Bus, nats_url: str,
                      work: Path, before_src: str = "") -> dict[str, Any]:
    """One burst of n joins at `rate`/s against a fresh server pinned to one core."""
    source = servers.Source(bus, SPACE)
    server: servers.Icecast | servers.TownhallEdge
    if kind == "icecast":
        server = await asyncio.to_thread(servers.Icecast, work, n, SERVER_CPU)
        await source.to_icecast(server.port)
        mode, path = "http", servers.MOUNT
    else:
        src = str(Path(before_src) / "src") if kind.endswith("-before") else ""
        server = await asyncio.to_thread(servers.TownhallEdge, work, nats_url, cap, SERVER_CPU,
                                         src)
        mode, path = ("ws", f"/ws/{SPACE}") if kind.startswith("townhall-ws") else (
            "http", f"/listen/{SPACE}.opus")
    feeding = asyncio.ensure_future(source.run())
    gen: Any = None
    try:
        await asyncio.sleep(1.5)
        pid = server.proc.pid
        ctx = mp.get_context("spawn")
        window, out = ctx.Queue(), ctx.Queue()
        gen = ctx.Process(target=rawjoin.main, args=(mode, "127.0.0.1", server.port, path, n,
                                                     rate, 2.0, LOADGEN_CPU, window, out))
        gen.start()
        await asyncio.to_thread(window.get, True, 60)
        cpu0 = servers.proc_cpu_s(pid)
        await asyncio.to_thread(window.get, True, 90)
        cpu1 = servers.proc_cpu_s(pid)
        result: dict[str, Any] = await asyncio.to_thread(out.get, True, 60)
        await asyncio.to_thread(gen.join, 20)
        alive = server.proc.poll() is None
    finally:
        feeding.cancel()
        if gen is not None and gen.is_alive():
            gen.kill()
        await asyncio.to_thread(server.stop)
    cpu_s = cpu1 - cpu0
    return {**result, "cpu_s": cpu_s, "alive": alive,
            "joins_per_cpu_s": result["admitted"] / cpu_s if cpu_s > 0 else None}


async def bursts(n: int, rate: float, runs: int, before_src: str = "") -> list[list[Any]]:
    """Median rows: Icecast, townhall ws, townhall Ogg at capacity, townhall ws at 5x (and
    the -before rows: the same from another source tree, when given)."""
    plan = [("at capacity", "icecast", n, n), ("at capacity", "townhall-ws", n, n),
            ("at capacity", "townhall-ogg", n, n), ("5x overload", "townhall-ws", n, n // 5)]
    if before_src:
        plan += [("at capacity", "townhall-ws-before", n, n),
                 ("at capacity", "townhall-ogg-before", n, n)]
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="joinstorm-") as tmp:
        work = Path(tmp)
        nats = EmbeddedNats(work / "nats")
        bus = await NatsBus.connect([nats.start()])
        await servers.live_space(bus, SPACE)
        try:
            with Progress(transient=False) as progress:
                task = progress.add_task("join bursts", total=runs * len(plan))
                for _ in range(runs):
                    for phase, kind, offered, cap in plan:  # interleaved: same machine load
                        progress.update(task, description=f"{phase}: {kind} x {offered}")
                        r = await _burst_once(kind, offered, cap, rate, bus, nats.url, work,
                                              before_src)
                        found.setdefault((phase, kind), []).append(r)
                        progress.advance(task)
        finally:
            await bus.close()
            nats.stop()

    def med(rs: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    ice = med(found[("at capacity", "icecast")], "joins_per_cpu_s")
    rows = []
    for phase, kind, offered, cap in plan:
        rs = found[(phase, kind)]
        per_core = med(rs, "joins_per_cpu_s")
        rows.append([f"burst, one core: {phase}", kind, f"{offered} at {rate:.0f}/s, cap {cap}",
                     _f(med(rs, "admitted")), _f(med(rs, "refused")), _f(med(rs, "joins_per_s")),
                     _f(per_core),
                     f"{per_core / ice:.2f}x" if per_core and ice else "—",
                     f"{_f(med(rs, 'ttfa_p50_ms'))} / {_f(med(rs, 'ttfa_p99_ms'))} ms",
                     _f(med(rs, "gaps")), _f(med(rs, "errors")),
                     "yes" if all(r["alive"] for r in rs) else "NO"])
    return rows


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _phase(url: str, space: str, listeners: int, ramp: float, hold: float,
           console: Console) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    summary = asyncio.run(storm(StormArgs(url, space, listeners, ramp, hold, workers=2),
                                console, rows_out=rows))
    return summary, rows


def main(argv: list[str]) -> dict[str, Any]:
    """Run the join storm at capacity and at 5x overload; rows for bench/README.md."""
    ap = argparse.ArgumentParser(prog="bench/joinstorm")
    ap.add_argument("--capacity", type=int, default=300)
    ap.add_argument("--ramp", type=float, default=1.0)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--burst", type=int, default=2000, help="joins per one-core burst")
    ap.add_argument("--burst-rate", type=float, default=4000.0,
                    help="joins per second the burst offers")
    ap.add_argument("--before-src", default="",
                    help="a directory holding another version's src/: adds -before burst rows")
    ap.add_argument("--bursts-only", action="store_true",
                    help="skip the storm-client phases (whole server)")
    args = ap.parse_args(argv)
    console = Console()
    started = time.monotonic()
    rows: list[list[Any]] = asyncio.run(bursts(args.burst, args.burst_rate, args.runs,
                                               args.before_src))
    url, proc = start_server({"TOWNHALL_EDGE_CAPACITY": str(args.capacity)})
    phases = () if args.bursts_only else (("at capacity", args.capacity),
                                          ("5x overload", 5 * args.capacity))
    try:
        for label, n in phases:
            runs = []
            for _ in range(args.runs):
                space, token = live_space(url, f"joinstorm {label}")
                s, series = _phase(url, space, n, args.ramp, args.hold, console)
                httpx.post(f"{url}/api/v1/spaces/{space}/end", timeout=5,
                           headers={"Authorization": f"Bearer {token}"})
                ramp_rows = [r for r in series if r["joins"] > 0]
                cpu = [r.get("server_cpu") or 0.0 for r in ramp_rows]
                joins = sum(r["joins"] for r in ramp_rows) / max(1, len(ramp_rows))
                per_core = joins / max(0.01, statistics.mean(cpu) / 100) if cpu else 0.0
                runs.append((s["admitted_joins"], joins, per_core, s["ttfa_p99_ms"] or 0.0,
                             s["refusals"], s["gaps"], s["failed"]))
            alive = proc.poll() is None and httpx.get(url + "/healthz").status_code == 200
            med = [statistics.median(col) for col in zip(*runs, strict=True)]
            rows.append([f"storm clients, all roles: {label}", "townhall serve",
                         f"{n} over {args.ramp:g} s, cap {args.capacity}", f"{med[0]:.0f}",
                         f"{med[4]:.0f}", f"{med[1]:.0f}", f"{med[2]:.0f}", "—",
                         f"— / {med[3]:.0f} ms", f"{med[5]:.0f}", f"{med[6]:.0f}",
                         "yes" if alive else "NO"])
    finally:
        stop_process(proc)  # each phase's Spaces were ended above
    console.print(f"joinstorm done in {time.monotonic() - started:.0f} s")
    return {
        "title": "Join storm at one edge",
        "command": f"python -m bench joinstorm {' '.join(argv)} (bursts of {args.burst} at "
                   f"{args.burst_rate:g}/s; storm: capacity {args.capacity}, ramp {args.ramp} s, "
                   f"hold {args.hold} s; median of {args.runs})",
        "columns": ["phase", "server", "offered", "admitted", "refused (503/4503)",
                    "admitted joins/s", "joins per server CPU-second", "vs Icecast",
                    "first audio p50 / p99", "gaps", "failed / errors", "server alive"],
        "rows": rows,
        "notes": "Bursts: the server alone on core 0 (townhall: `serve --roles edge`, join "
                 "bucket 5000/s; Icecast 2 from Debian with burst-on-connect), the raw "
                 "joiner on core 1; first audio = first chunk (WebSocket) or first Ogg page "
                 "past the headers (HTTP); joins/s = admitted / time from the first join to "
                 "the last first audio, so it includes waiting for the next 100 ms chunk; "
                 "joins per CPU-second = admitted / server CPU time over the burst. Storm "
                 "rows: the whole server (api, edge, stage, nats) with townhall storm's "
                 f"websockets clients on the same {os.cpu_count()} CPUs; there joins/s is "
                 "bounded by the offered rate. -before = the same edge from --before-src "
                 "(the version before this one). The machine is shared with other "
                 "engineers' runs.",
    }
