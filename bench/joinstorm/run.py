"""Join storm at one edge: admitted joins/s, time to first audio, and 5x overload."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import httpx
from rich.console import Console

from bench._local import live_space, start_server, stop
from townhall.storm.run import StormArgs, storm


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
    args = ap.parse_args(argv)
    console = Console()
    url, proc = start_server({"TOWNHALL_EDGE_CAPACITY": str(args.capacity)})
    rows: list[list[Any]] = []
    try:
        for label, n in (("at capacity", args.capacity), ("5x overload", 5 * args.capacity)):
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
            rows.append([label, n, f"{med[0]:.0f}", f"{med[1]:.0f}", f"{med[2]:.0f}",
                         f"{med[3]:.0f} ms", f"{med[4]:.0f}", f"{med[5]:.0f}", f"{med[6]:.0f}",
                         "yes" if alive else "NO"])
    finally:
        stop(url, "", "", proc)
    return {
        "title": "Join storm at one edge",
        "command": f"python -m bench joinstorm (capacity {args.capacity}, ramp {args.ramp} s, "
                   f"hold {args.hold} s, median of {args.runs})",
        "columns": ["phase", "listeners", "admitted", "joins/s (ramp)",
                    "joins/s per server core", "p99 time to first audio", "refusals (503/4503)",
                    "gaps", "failed", "server alive"],
        "rows": rows,
        "notes": "Load generator (townhall storm, 2 worker processes) runs on the same "
                 "machine as the server; joins/s per core divides by the whole server's "
                 "CPU (api, edge, stage, nats). joins/s is averaged over the 1 s samples "
                 "with joins, "
                 "so it is bounded by the offered rate (listeners / ramp), not yet the edge's "
                 "limit: raise --capacity to find it. No external reference measured yet.",
    }
