"""The night that melted, scaled down: 3 speakers live, listeners ramping to 3x one edge."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench._local import live_space, start_server, stop
from townhall.storm.run import StormArgs, storm

HERE = Path(__file__).resolve().parent


def _bring_on_stage(url: str, space: str, host: str, name: str) -> str:
    """A guest invited by the host accepts; returns the speaker's token."""
    with httpx.Client(base_url=url, timeout=10) as c:
        tok = c.post("/api/v1/sessions", json={"name": name}).json()
        c.post(f"/api/v1/spaces/{space}/actions", headers={"Authorization": f"Bearer {host}"},
               json={"action": "invite", "identity": tok["identity"],
                     "name": name}).raise_for_status()
        c.post(f"/api/v1/spaces/{space}/actions",
               headers={"Authorization": f"Bearer {tok['token']}"},
               json={"action": "accept"}).raise_for_status()
    return str(tok["token"])


def _late_frames(url: str) -> str:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^townhall_stage_late_frames_total (\S+)", text, re.M)
    return m.group(1) if m else "not exported (stage runs in its own process)"


def main(argv: list[str]) -> dict[str, Any]:
    """Run the scenario; writes a storm report with plots under bench/scenarios/viral-space."""
    ap = argparse.ArgumentParser(prog="bench/scenarios/viral-space")
    ap.add_argument("--capacity", type=int, default=100, help="one edge's listener cap")
    ap.add_argument("--ramp", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=20.0)
    ap.add_argument("--report", default=str(HERE / "report"))
    args = ap.parse_args(argv)
    url, proc = start_server({"TOWNHALL_EDGE_CAPACITY": str(args.capacity)})
    space, host = live_space(url, "viral space")
    speakers: list[subprocess.Popen[bytes]] = []
    try:
        tokens = [host] + [_bring_on_stage(url, space, host, f"speaker {i}") for i in (1, 2)]
        secs = str(int(args.ramp + args.hold + 20))
        for tok, hz in zip(tokens, ("440", "660", "880"), strict=True):
            speakers.append(subprocess.Popen(
                [sys.executable, "-m", "townhall", "speak", "--url", url, "--space", space,
                 "--token", tok, "--tone", hz, "--seconds", secs],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        n = 3 * args.capacity
        s = asyncio.run(storm(StormArgs(url, space, n, args.ramp, args.hold, workers=2,
                                        reactions=2, requests=0.2,
                                        report=Path(args.report)), Console()))
        alive = proc.poll() is None and all(p.poll() is None for p in speakers)
        late = _late_frames(url)
    finally:
        for p in speakers:
            p.terminate()
        stop(url, space, host, proc)
    checks = [
        ("listeners started", n, ""),
        ("admitted (edge cap)", s["connected"], f"cap {args.capacity}"),
        ("refused listeners / refusals", f"{s['refused']} / {s['refusals']}",
         "refusals > refused listeners = they retried"),
        ("failed", s["failed"], str(s["reasons"])),
        ("gaps heard by admitted listeners", s["gaps"], "every chunk heard when 0"),
        ("announced skips", s["skips"], ""),
        ("p99 time to first audio", f"{s['ttfa_p99_ms'] or 0:.0f} ms", ""),
        ("p99 delay behind live", f"{s['delay_p99_ms'] or 0:.0f} ms", ""),
        ("stage late mixer ticks", late,
         "read from the HTTP process's /metrics; the stage mixes in its own process, so "
         "this may not be its counter (unverified)"),
        ("server and speakers still running", "yes" if alive else "NO", "nobody restarted"),
        ("accounting balanced", s["accounting_balanced"], ""),
    ]
    return {
        "title": "Scenario: viral Space (3 speakers, listeners to 3x one edge)",
        "command": f"python -m bench viral-space (capacity {args.capacity}, ramp {args.ramp} s, "
                   f"hold {args.hold} s); plots in {os.path.relpath(args.report)}/index.html",
        "columns": ["check", "value", "meaning"],
        "rows": [list(c) for c in checks],
        "notes": "One run. Nobody leaves during the hold, so refused listeners keep retrying "
                 "with backoff but no capacity frees up for them; a churn phase is not "
                 "simulated yet.",
    }
