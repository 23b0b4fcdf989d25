"""Edge fan-out vs Icecast 2: CPU per listener-minute, memory per connection, stalls.

    .venv/bin/python -m bench fanout          # defaults: 1000,5000,10000 × 3 runs × 15 s
    .venv/bin/python bench/fanout/run.py --listeners 1000,5000 --seconds 15 --runs 3

Each server under test runs alone on core 0 (taskset); the load generator (raw asyncio
protocols, bench/fanout/loadgen.py) runs in its own process on core 1. One source feeds
both the same 32 kbps Opus tone, one Ogg page / chunk per 100 ms. Rows per listener
count: Icecast (HTTP Ogg), townhall's /listen/<id>.opus (the same HTTP Ogg client) and
townhall's /ws/<id> WebSocket; with ``--before-src DIR`` also both townhall rows run from
another source tree (``-before``: e.g. ``git archive <commit> src | tar -x -C DIR``), to
compare two versions of the edge in the same run. CPU = server process user+system time
during the window; nats-server's, which townhall's edge needs and Icecast does not, is
measured over the same window and reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from bench.fanout import loadgen  # noqa: E402
from bench.fanout.servers import (  # noqa: E402
    MOUNT,
    Icecast,
    Source,
    TownhallEdge,
    live_space,
    proc_cpu_s,
    proc_rss_kib,
)
from townhall.bus import Bus, NatsBus  # noqa: E402
from townhall.bus.embedded import EmbeddedNats  # noqa: E402

SERVER_CPU = 0
LOADGEN_CPU = 1
SPACE = "benchfan01"
KINDS = ("icecast", "townhall-ogg", "townhall-ws", "townhall-ogg-before", "townhall-ws-before")
console = Console(width=None if sys.stdout.isatty() else 160)


async def measure(kind: str, n: int, args: argparse.Namespace, bus: Bus, nats_url: str,
                  work: Path, interval_ms: int = 100, nats_pid: int | None = None
                  ) -> dict[str, Any]:
    """One run: a fresh server, N listeners, CPU and RSS over the window (and the CPU
    nats-server spent in the same window: townhall's edge needs it, Icecast does not)."""
    source = Source(bus, SPACE, args.page_ms)
    server: Icecast | TownhallEdge
    if kind == "icecast":
        server = await asyncio.to_thread(Icecast, work, n, SERVER_CPU)
        await source.to_icecast(server.port)
        mode, path = "http", MOUNT
    else:
        server = await asyncio.to_thread(
            TownhallEdge, work, nats_url, n + 100, SERVER_CPU,
            str(Path(args.before_src) / "src") if kind.endswith("-before") else "",
            interval_ms)
        mode, path = ("http", f"/listen/{SPACE}.opus") if "-ogg" in kind else (
            "ws", f"/ws/{SPACE}")
    feeding = asyncio.ensure_future(source.run())
    gen: Any = None
    try:
        await asyncio.sleep(1.5)
        pid = server.proc.pid
        rss0 = proc_rss_kib(pid)
        ctx = mp.get_context("spawn")
        window, out = ctx.Queue(), ctx.Queue()
        gen = ctx.Process(target=loadgen.main, args=(
            mode, "127.0.0.1", server.port, path, n, args.join_rate, args.settle, args.seconds,
            LOADGEN_CPU, window, out, max(1.0, 2 * max(args.page_ms, interval_ms) / 1000)))
        gen.start()
        bound = n / args.join_rate + args.seconds + 120
        _, t0 = await asyncio.to_thread(window.get, True, bound)
        cpu0, rss1 = proc_cpu_s(pid), proc_rss_kib(pid)
        nats0 = proc_cpu_s(nats_pid) if nats_pid is not None else None
        _, t1 = await asyncio.to_thread(window.get, True, args.seconds + 60)
        cpu1 = proc_cpu_s(pid)
        nats1 = proc_cpu_s(nats_pid) if nats_pid is not None else None
        paths = (await asyncio.to_thread(server.deliveries)
                 if isinstance(server, TownhallEdge) else None)
        interval = (await asyncio.to_thread(server.interval)
                    if isinstance(server, TownhallEdge) else None)
        result: dict[str, Any] = await asyncio.to_thread(out.get, True, 120)
        await asyncio.to_thread(gen.join, 30)
    finally:
        feeding.cancel()
        if gen is not None and gen.is_alive():
            gen.kill()
        await asyncio.to_thread(server.stop)
    minutes = (t1 - t0) / 60
    connected = max(result["connected"], 1)
    sent = sum(paths.values()) if paths else 0
    return {**result,
            "direct_pct": paths["direct"] * 100 / sent if paths and sent else None,
            "interval_ms": None if interval is None else interval * 1000,
            "cpu_ms_per_listener_min": (cpu1 - cpu0) * 1000 / (connected * minutes),
            "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
            "nats_ms_per_listener_min": None if nats0 is None or nats1 is None
            else (nats1 - nats0) * 1000 / (connected * minutes),
            "nats_cpu_pct": None if nats0 is None or nats1 is None
            else (nats1 - nats0) / (t1 - t0) * 100,
            "kib_per_conn": (rss1 - rss0) / connected,
            "kbps": result["bytes"] * 8 / 1000 / (connected * (t1 - t0))}


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


async def run_all(args: argparse.Namespace) -> dict[int, dict[str, list[dict[str, Any]]]]:
    sizes = [int(x) for x in args.listeners.split(",")]
    kinds = [k for k in KINDS if k in args.servers.split(",")
             and (args.before_src or not k.endswith("-before"))]
    intervals = [int(x) for x in args.intervals.split(",")]
    # (row label, server kind, the edge's delivery floor): townhall rows at each interval
    # asked for (Icecast and the -before tree have no floor setting: 100 ms only).
    plan = []
    for k in kinds:
        floorless = k == "icecast" or k.endswith("-before")
        for ms in [100] if floorless else intervals:
            plan.append((k if floorless or intervals == [100] else f"{k} @{ms} ms", k, ms))
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        work = Path(tmp)
        nats = EmbeddedNats(work / "nats")
        nats_url = nats.start()
        nats_pid = nats.proc.pid if nats.proc is not None else None
        bus = await NatsBus.connect([nats_url])
        await live_space(bus, SPACE)
        try:
            with Progress(console=console, transient=False) as progress:
                total = len(sizes) * len(plan) * args.runs
                task = progress.add_task("fan-out runs", total=total)
                for n in sizes:
                    for _ in range(args.runs):
                        for label, kind, ms in plan:  # interleaved: same machine load each
                            progress.update(task, description=f"{label} × {n}")
                            try:
                                r = await measure(kind, n, args, bus, nats_url, work, ms,
                                                  nats_pid)
                            except Exception as exc:  # one bad run must not lose the rest
                                r = {"failed": f"{type(exc).__name__}: {exc}"}
                                console.print(f"[red]{label} × {n} failed: {r['failed']}")
                            if args.save:
                                line = json.dumps({"kind": label, "listeners": n, **r}) + "\n"
                                with Path(args.save).open("a") as f:  # noqa: ASYNC230
                                    f.write(line)
                            results.setdefault(n, {}).setdefault(label, []).append(r)
                            progress.advance(task)
        finally:
            await bus.close()
            nats.stop()
    return results


def _ratio(cpu: float | None, ice: float | None, interval: float | None,
           page_ms: int) -> str:
    """``cpu`` over Icecast's, naming the two delivery intervals compared (townhall's
    interval at the end of the window vs Icecast's page interval): like for like only
    where they are equal."""
    if cpu is None or not ice:
        return "—"
    ours = "—" if interval is None else f"{interval:.0f}"
    return f"{cpu / ice:.2f}× ({ours} vs {page_ms} ms)"


def tabulate(results: dict[int, dict[str, list[dict[str, Any]]]], page_ms: int = 100
             ) -> tuple[list[str], list[list[str]]]:
    """Medians per (listeners, server), with the CPU ratio to Icecast of the same size,
    the edge alone and with the nats-server CPU it needs."""
    columns = ["listeners", "server", "runs ok", "connected", "CPU ms / listener-min",
               "vs Icecast (intervals compared)", "NATS CPU ms / listener-min",
               "vs Icecast, edge + NATS", "server CPU %", "NATS CPU %", "KiB / conn",
               "stalls", "closed early", "kbit/s per listener", "p99 delay (WS)",
               "direct writes", "delivery interval"]
    rows = []
    for n, by_kind in results.items():
        ice = _median(by_kind.get("icecast", []), "cpu_ms_per_listener_min")
        for kind, runs in by_kind.items():
            cpu = _median(runs, "cpu_ms_per_listener_min")
            nats = _median(runs, "nats_ms_per_listener_min")
            townhall = kind != "icecast"
            interval = _median(runs, "interval_ms") if townhall else float(page_ms)
            both = cpu + nats if townhall and cpu is not None and nats is not None else None
            p99 = _median(runs, "p99_ms")
            ok = sum(1 for r in runs if "failed" not in r)
            rows.append([str(n), kind, f"{ok}/{len(runs)}",
                         _fmt(_median(runs, "connected"), ".0f"),
                         _fmt(cpu, ".1f"), _ratio(cpu, ice, interval, page_ms),
                         _fmt(nats, ".1f") if townhall else "—",
                         _ratio(both, ice, interval, page_ms) if townhall else "—",
                         _fmt(_median(runs, "cpu_pct"), ".0f"),
                         _fmt(_median(runs, "nats_cpu_pct"), ".1f") if townhall else "—",
                         _fmt(_median(runs, "kib_per_conn"), ".1f"),
                         _fmt(_median(runs, "stalls"), ".0f"),
                         _fmt(_median(runs, "closed_early"), ".0f"),
                         _fmt(_median(runs, "kbps"), ".1f"),
                         "—" if p99 is None else f"{p99:.0f} ms",
                         _fmt(_median(runs, "direct_pct"), ".0f") + (
                             " %" if kind != "icecast" else ""),
                         _fmt(_median(runs, "interval_ms"), ".0f") + (
                             " ms" if kind != "icecast" else "")])
    return columns, rows


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", default="1000,5000,10000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds between the last join and the window (the join ramp "
                             "saturates the edge; its pacer steps back down meanwhile)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--join-rate", type=float, default=1000.0,
                        help="joins per second the load generator offers")
    parser.add_argument("--servers", default=",".join(KINDS))
    parser.add_argument("--save", default="",
                        help="append each run's raw result to this JSON-lines file")
    parser.add_argument("--page-ms", type=int, default=100,
                        help="Ogg page interval of the Icecast source (100: a page per chunk; "
                             "1000: as ffmpeg's Ogg muxer pages by default)")
    parser.add_argument("--intervals", default="100",
                        help="townhall delivery floors to run (ms, TOWNHALL_EDGE_INTERVAL_MS), "
                             "e.g. 1000,100 = same interval as 1 s Icecast pages, and default")
    parser.add_argument("--before-src", default="",
                        help="a directory holding another version's src/ (the -before rows; "
                             "none without it)")
    parser.add_argument("--quiet-machine", action="store_true",
                        help="say in the notes that nothing else ran on the machine")
    return parser.parse_args(argv)


def notes(args: argparse.Namespace, load: float, cpus: int | None) -> str:
    """What the table's rows mean, said from the arguments this run used."""
    intervals = [int(x) for x in args.intervals.split(",")]
    parts = [
        f"Server pinned to core {SERVER_CPU}, load generator (raw asyncio protocols on "
        f"uvloop, one process) to core {LOADGEN_CPU}; nats-server unpinned, its CPU "
        "measured over the same window (\"NATS CPU\"; townhall's edge needs it, Icecast "
        "does not: \"edge + NATS\" is the like-for-like total). One source writes the same "
        f"32 kbps Opus tone as one Ogg page per {args.page_ms} ms to Icecast and one chunk "
        "per 100 ms to NATS.",
        f"{args.runs} run(s) of {args.seconds:g} s per row after a {args.settle:g} s settle, "
        f"joins offered at {args.join_rate:g}/s; medians over the runs that completed "
        "(runs ok).",
        f"Icecast sends each page as it comes ({args.page_ms} ms); townhall delivers at its "
        "floor" + (" (@N ms = TOWNHALL_EDGE_INTERVAL_MS)" if intervals != [100] else
                   " (the default 100 ms)")
        + " unless its pacer coarsens delivery under load; each ratio names the two "
        "intervals it compares (townhall's delivery interval at the end of the window vs "
        "Icecast's page interval): like for like only where they are equal.",
    ]
    if args.before_src:
        parts.append("-before = the same edge from the source tree given by --before-src "
                     f"({args.before_src}).")
    parts.append("stalls = a listener silent > 1 s in the window; kbit/s per listener = "
                 "body bytes received per listener per second; direct writes = share of live "
                 "chunks written by the fast path (the fast set).")
    machine = ("a quiet machine" if args.quiet_machine
               else "a machine shared with other work while it ran")
    parts.append(f"Load average {load:.1f} at start on {cpus or '?'} CPUs: {machine}.")
    return " ".join(parts)


def main(argv: list[str]) -> dict[str, Any]:
    """`python -m bench fanout` entry point."""
    args = parse(argv)
    load, cpus = os.getloadavg()[0], os.cpu_count()
    started = time.monotonic()
    results = asyncio.run(run_all(args))
    columns, rows = tabulate(results, args.page_ms)
    table = Table(title=f"edge fan-out vs Icecast, median of {args.runs} run(s)")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"done in {time.monotonic() - started:.0f} s")
    return {"title": "Edge vs Icecast: listener fan-out on one core",
            "command": "python bench/fanout/run.py " + " ".join(argv),
            "columns": columns, "rows": rows, "notes": notes(args, load, cpus)}


if __name__ == "__main__":
    from bench.__main__ import README, machine, markdown, write_block

    where, when = machine(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    outcome = main(sys.argv[1:])
    README.write_text(write_block(README.read_text(), "fanout",
                                  markdown("fanout", outcome, when, where)))
