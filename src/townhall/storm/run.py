"""The storm shell: preflight, workers, actors, dashboard and report."""

from __future__ import annotations

import asyncio
import queue
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from rich.console import Console
from rich.live import Live

from townhall.storm import actors, dashboard, report, server_stats
from townhall.storm.tally import StormTally
from townhall.storm.workers import Plan, spawn, split


@dataclass(frozen=True)
class StormArgs:
    """The storm's command-line settings."""

    url: str
    space: str
    listeners: int
    ramp: float
    hold: float
    protocol: str = "ws"
    reactions: float = 0.0
    requests: float = 0.0
    workers: int = 2
    report: Path | None = None
    server_pid: int | None = None
    stay: float | None = None  # mean seconds an admitted listener stays, then leaves


class PreflightError(Exception):
    """The target cannot be stormed (unreachable, or no such Space)."""


async def preflight(url: str, space: str) -> dict[str, Any]:
    """GET the Space's snapshot; raise PreflightError with a clear message if we cannot."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            resp = await client.get(f"/api/v1/spaces/{space}")
    except httpx.HTTPError as exc:
        raise PreflightError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code == 404:
        raise PreflightError(f"no Space {space!r} at {url}")
    if resp.status_code != 200:
        raise PreflightError(f"{url} answered {resp.status_code} for Space {space!r}")
    snap: dict[str, Any] = resp.json()
    return snap


async def storm(a: StormArgs, console: Console,
                rows_out: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the storm; returns the summary (report written when a.report is set)."""
    snap = await preflight(a.url, a.space)
    pid = a.server_pid or server_stats.pid_listening_on(urlparse(a.url).port or 80)
    workers = max(1, min(a.workers, a.listeners))
    start_wall = time.time() + 1.0  # give the workers a second to boot
    plans = [Plan(w, a.url, a.space, ids, a.ramp, a.listeners, a.ramp + a.hold, a.protocol,
                  a.stay)
             for w, ids in enumerate(split(a.listeners, workers))]
    procs, out = spawn(plans, start_wall)
    tally = StormTally(a.listeners)
    rows: list[dict[str, Any]] = [] if rows_out is None else rows_out
    acts: Counter[str] = Counter()
    until = time.monotonic() + (start_wall - time.time()) + a.ramp + a.hold
    async with httpx.AsyncClient(base_url=a.url, timeout=5) as client:
        actor_tasks = [asyncio.ensure_future(actors.reactions(client, a.space, a.reactions,
                                                              until, acts)),
                       asyncio.ensure_future(actors.requests_to_speak(
                           client, a.space, a.requests, until, acts))]
        done: set[int] = set()
        prev = time.monotonic()
        prev_srv = server_stats.sample(pid) if pid else None
        deadline = until + 30  # workers end at `until`; bound the wait for stragglers
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while len(done) < workers and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                while True:
                    try:
                        w, cpu, ev = out.get_nowait()
                    except queue.Empty:
                        break
                    if ev is None:
                        done.add(w)
                    else:
                        tally.feed(w, cpu, ev)
                now = time.monotonic()
                row = tally.row(now - prev)
                row["t"] = round(now - (until - a.ramp - a.hold), 1)
                row["target_started"] = min(a.listeners, max(0, round(
                    a.listeners * row["t"] / a.ramp))) if a.ramp > 0 else a.listeners
                srv = server_stats.sample(pid) if pid else None
                if srv and prev_srv:
                    row["server_cpu"] = (srv[0] - prev_srv[0]) * 100 / (now - prev)
                    row["server_rss_mb"] = srv[1] / 2**20
                prev, prev_srv = now, srv
                rows.append(row)
                live.update(dashboard.render(row, a.listeners))
                if not console.is_terminal and len(rows) % 5 == 0:
                    # No terminal (CI, a pipe): Live only draws at the end, so log progress.
                    print(dashboard.line(row, a.listeners), flush=True)
        for t in actor_tasks:
            t.cancel()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    summary = {"url": a.url, "space": a.space, "title": snap.get("title"),
               "protocol": a.protocol, "workers": workers, "stay_s": a.stay,
               "ramp_s": a.ramp, "hold_s": a.hold,
               **tally.summary(), "actors": dict(acts),
               "server_pid": pid, "workers_finished": len(done)}
    if a.report is not None:
        report.write(a.report, summary, rows)
    return summary


def main(a: StormArgs) -> int:
    """Run a storm from the command line; prints the summary; exit code 0/1/2."""
    console = Console(stderr=False)
    try:
        summary = asyncio.run(storm(a, console))
    except PreflightError as exc:
        print(f"townhall storm: {exc}", file=sys.stderr)
        return 2
    console.print(summary)
    if a.report is not None:
        console.print(f"report: {a.report / 'index.html'}")
    return 0 if summary["accounting_balanced"] else 1
