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

from townhall.storm import actors, dashboard, rates, report, server_stats
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
    page_poll: float = 0.0  # browser: the previous web app's snapshot poll, every S s
    api_pid: int | None = None  # the api's process, for api CPU (default: the server's own)


# "After the ramp" starts this long after it: workers report once a second, and the last
# viewers' page loads should not count as steady state.
SETTLE_S = 2.0


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
    browser = a.protocol == "browser"
    plans = [Plan(w, a.url, a.space, ids, a.ramp, a.listeners, a.ramp + a.hold, a.protocol,
                  a.stay, a.page_poll, a.reactions / workers if browser else 0.0)
             for w, ids in enumerate(split(a.listeners, workers))]
    api_pid = a.api_pid or pid
    procs, out = spawn(plans, start_wall)
    tally = StormTally(a.listeners)
    rows: list[dict[str, Any]] = [] if rows_out is None else rows_out
    acts: Counter[str] = Counter()
    until = time.monotonic() + (start_wall - time.time()) + a.ramp + a.hold
    async with httpx.AsyncClient(base_url=a.url, timeout=5) as client:
        # Browser viewers react over their sockets, as the page does; others over the api.
        actor_tasks = [asyncio.ensure_future(actors.reactions(
                           client, a.space, 0.0 if browser else a.reactions, until, acts)),
                       asyncio.ensure_future(actors.requests_to_speak(
                           client, a.space, a.requests, until, acts))]
        done: set[int] = set()
        prev = time.monotonic()
        prev_srv = server_stats.sample(pid) if pid else None
        prev_api = server_stats.process_cpu(api_pid) if api_pid else None
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
                    row["server_cpu_s"] = srv[0] - prev_srv[0]
                    row["server_rss_mb"] = srv[1] / 2**20
                api_cpu = server_stats.process_cpu(api_pid) if api_pid else None
                if api_cpu is not None and prev_api is not None:
                    row["api_cpu_s"] = api_cpu - prev_api
                prev, prev_srv, prev_api = now, srv, api_cpu
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
               "ramp_s": a.ramp, "hold_s": a.hold, "page_poll_s": a.page_poll,
               **tally.summary(), "actors": dict(acts),
               "server_pid": pid, "api_pid": api_pid, "workers_finished": len(done)}
    if browser:
        summary.update(page_figures(rows, rates.steady_from(rows, a.ramp + SETTLE_S),
                                    summary))
    if a.report is not None:
        report.write(a.report, summary, rows)
    return summary


def page_figures(rows: list[dict[str, Any]], after_t: float,
                 summary: dict[str, Any]) -> dict[str, Any]:
    """The browser figures: api requests and CPU per viewer-minute after the ramp, and
    page-to-first-audio (a browser viewer's first audio is timed from its page request)."""
    def per_min(key: str, scale: float = 1.0) -> float | None:
        v = rates.per_viewer_minute(rows, key, after_t)
        return None if v is None else round(v * scale, 3)

    return {
        "steady_after_s": after_t,
        "viewer_minutes_after_ramp": round(rates.viewer_minutes(rows, after_t), 2),
        "api_requests_per_viewer_minute": per_min("api_requests"),
        "api_cpu_ms_per_viewer_minute": per_min("api_cpu_s", 1000),
        "server_cpu_ms_per_viewer_minute": per_min("server_cpu_s", 1000),
        "page_to_first_audio_p50_ms": summary["ttfa_p50_ms"],
        "page_to_first_audio_p99_ms": summary["ttfa_p99_ms"],
    }


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
