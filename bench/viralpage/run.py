"""The viral link, as browsers open it: `storm --protocol browser` at 1,000 and 5,000 viewers,
and in the same run the previous web app (the snapshot polled every 2 s) as the reference.

Each repetition starts fresh processes on loopback with the api in one of its own (NATS,
`serve --roles api`, `serve --roles edge,stage`), so the api's CPU is the api's alone; the
page, its assets and the snapshot come from the api, the socket from the edge it names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from rich.console import Console

from townhall.bus.embedded import EmbeddedNats, free_port
from townhall.procs import stop_process, stop_processes
from townhall.storm import report, server_stats
from townhall.storm.run import StormArgs, storm

HERE = Path(__file__).resolve().parent
MODES = {"page": 0.0, "poll 2 s": 2.0}  # label -> --page-poll (0: the new page, no polling)


def _live_space(url: str, title: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as c:
        token = c.post("/api/v1/sessions", json={"name": "bench host"}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        space = str(c.post("/api/v1/spaces", json={"title": title}, headers=h).json()["id"])
        c.post(f"/api/v1/spaces/{space}/start", headers=h).raise_for_status()
    return space


async def _first_chunk(url: str, space: str, wait_s: float = 90.0) -> None:
    """Wait until the Space's audio flows at its edge (the stage picks a Space up a moment
    after it starts): page-to-first-audio is then the page's, not the stage's start-up."""
    deadline = time.monotonic() + wait_s
    ws = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, TimeoutError, httpx.HTTPError, IndexError,
                                 websockets.ConnectionClosed):
            # the api names the edge once the edge's first report reached it
            async with httpx.AsyncClient(timeout=10) as c:
                edges = (await c.get(f"{url}/api/v1/spaces/{space}/listen")).json()
            ws = str(edges["edges"][0]["ws"]).replace("http", "ws", 1)
            async with websockets.connect(ws, open_timeout=10) as sock:
                while time.monotonic() < deadline:
                    msg = await asyncio.wait_for(sock.recv(), deadline - time.monotonic())
                    if isinstance(msg, bytes):
                        return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"no audio from Space {space} at {ws} after {wait_s} s")


def _serve(roles: str, nats: str, data: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`townhall serve --roles ROLES` on the shared NATS; waits for /healthz (60 s bound)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / f"{roles.replace(',', '-')}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "townhall", "serve", "--roles", roles,
                             "--nats", nats, "--port", str(port), "--public-url", url,
                             "--data", str(data / roles), "--node-id", roles.split(",")[0]],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url, proc
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"townhall serve --roles {roles} did not start; see {log.name}")


def _cpu(pids: list[int]) -> float:
    return sum((server_stats.sample(p) or (0.0, 0))[0] for p in pids)  # with children


def one_rep(n: int, ramp: float, hold: float, rep: int, out: Path | None,
            console: Console) -> dict[str, dict[str, Any]]:
    """Both modes on one fresh cluster, the new page first; summaries by mode.

    With ``out`` the storm reports and the plot of both modes' api requests go there.
    """
    data = Path(tempfile.mkdtemp(prefix="townhall-viralpage-"))
    nats = EmbeddedNats(data / "nats")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nats_url = nats.start()
        _, edge = _serve("edge,stage", nats_url, data)
        procs.append(edge)
        url, api = _serve("api", nats_url, data)
        procs.append(api)
        api_pid = api.pid
        assert nats.proc is not None
        others = [edge.pid, nats.proc.pid]
        runs: dict[str, dict[str, Any]] = {}
        rows: dict[str, list[dict[str, Any]]] = {}
        for label, poll in MODES.items():
            space = _live_space(url, f"viral page {n} {label}")
            asyncio.run(_first_chunk(url, space))
            console.rule(f"viralpage: {n} viewers, {label}, run {rep + 1}")
            rows[label] = []
            cpu0 = _cpu(others)
            s = asyncio.run(storm(StormArgs(
                url, space, n, ramp, hold, protocol="browser", page_poll=poll, workers=2,
                report=out / f"{n}-{label.split()[0]}" if out else None, server_pid=api_pid,
                api_pid=api_pid), console, rows[label]))
            s["rest_cpu_s"] = _cpu(others) - cpu0  # edge, stage, NATS over the whole storm
            runs[label] = s
        if out:
            report.compare_api_rate(out / f"api-{n}.png", rows)
        return runs
    finally:
        stop_processes(procs)
        nats.stop()


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _ratio(new: float | None, ref: float | None) -> str:
    if new is None or not ref:
        return "—"
    return f"{new / ref:.3f}"


def main(argv: list[str]) -> dict[str, Any]:
    """Run every size and repetition; the table of medians."""
    ap = argparse.ArgumentParser(prog="bench/viralpage")
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hold", type=float, default=30.0)
    ap.add_argument("--ramp", type=float, default=None,
                    help="seconds to open every page (default: n/100, at least 20)")
    ap.add_argument("--report", default=str(HERE / "report"))
    args = ap.parse_args(argv)
    # The edge must not refuse anyone: this measures the control plane, not the edge cap.
    os.environ.setdefault("TOWNHALL_EDGE_CAPACITY", "20000")
    out = Path(args.report)
    console = Console()
    sizes = [int(s) for s in args.sizes.split(",")]
    ramps = {n: args.ramp or max(20.0, n / 100) for n in sizes}  # 1,000: 20 s; 5,000: 50 s
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for n in sizes:
        results[n] = {label: [] for label in MODES}
        for rep in range(args.runs):
            keep = out if rep == args.runs - 1 else None  # reports of the last run only
            for label, s in one_rep(n, ramps[n], args.hold, rep, keep, console).items():
                results[n][label].append(s)
            time.sleep(2)  # let the last processes exit before the next cluster

    rows: list[list[Any]] = []

    def row(label: str, key: str, fn: Callable[[float | None], str] = _fmt,
            ratio: bool = True) -> None:
        for n in sizes:
            new = _median(results[n]["page"], key)
            ref = _median(results[n]["poll 2 s"], key)
            rows.append([f"{label}, {n:,} viewers", fn(new), fn(ref),
                         _ratio(new, ref) if ratio else ""])

    row("api requests per viewer-minute after the ramp (the reference offers 30)",
        "api_requests_per_viewer_minute",
        lambda v: _fmt(v, 2))
    row("api CPU ms per viewer-minute after the ramp", "api_cpu_ms_per_viewer_minute")
    row("page-to-first-audio p50 (ms)", "page_to_first_audio_p50_ms", _fmt, ratio=False)
    row("page-to-first-audio p99 (ms)", "page_to_first_audio_p99_ms", _fmt, ratio=False)
    row("edge + stage + NATS CPU s over the storm", "rest_cpu_s", _fmt, ratio=False)
    for n in sizes:
        for label in MODES:
            rs = results[n][label]
            per = [r["requests_per_viewer"] for r in rs]
            rows.append([f"requests per viewer (page / asset / snapshot / other api), "
                         f"{n:,}, {label}",
                         " / ".join(_fmt(statistics.median(p[k]["mean"] for p in per), 1)
                                    for k in ("page", "asset", "snapshot", "api_other")),
                         f"got audio {min(r['connected'] for r in rs)}-"
                         f"{max(r['connected'] for r in rs)} of {n}, failed "
                         f"{max(r['failed'] for r in rs)}", ""])
    return {
        "title": "Scenario: the viral link opened by browsers (new page vs the 2 s poll)",
        "command": f"python -m bench viralpage -- --sizes {args.sizes} --runs {args.runs} "
                   f"--hold {args.hold} (ramps {', '.join(f'{ramps[n]:.0f} s' for n in sizes)})",
        "columns": ["figure (median of runs)", "page (no polling)",
                    "reference: previous app (poll every 2 s)", "ratio page / reference"],
        "rows": rows,
        "notes": (f"Median of {args.runs} runs per size; each run a fresh loopback cluster "
                  "(nats-server, `serve --roles api`, `serve --roles edge,stage`) with both modes "
                  "on "
                  "fresh live Spaces, the page first. The api's CPU is its own process's. "
                  "The load generator (2 storm workers; each viewer its own HTTP/1.1 "
                  "keep-alive connections and a websockets socket) shares the machine's 2 "
                  "cores with every server process, so "
                  "page-to-first-audio includes its own queueing. No speaker: first audio is "
                  "the first chunk of the live Space (silence is sent too). Where the reference "
                  "stays under 30 api requests per viewer-minute, the api answered the polls "
                  "more slowly than they came (each page polls 2 s after its last answer). "
                  "Reports and "
                  f"plots of each size's last run in {os.path.relpath(out)}/ (api-<n>.png: api "
                  "requests per second of both modes)."),
    }
