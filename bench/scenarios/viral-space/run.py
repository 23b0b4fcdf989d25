"""The night that melted, scaled down: 3 speakers live, listeners ramping to 3x one edge."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench._local import live_server
from bench._speakers import bring_on_stage, spawn_tone_speaker
from townhall.procs import stop_processes
from townhall.storm.run import StormArgs, storm

HERE = Path(__file__).resolve().parent


def stage_counters(url: str, wait_s: float = 15.0) -> tuple[float, float]:
    """(mixer ticks, late ticks) summed over stages, from the stage heartbeats on /metrics."""
    deadline = time.monotonic() + wait_s  # the first heartbeat comes a second after start
    while True:
        text = httpx.get(url + "/metrics", timeout=5).text
        ticks = re.findall(r"^townhall_stage_ticks_total\{[^}]*\} (\S+)", text, re.M)
        late = re.findall(r"^townhall_stage_late_frames_total\{[^}]*\} (\S+)", text, re.M)
        if ticks and late:
            return sum(map(float, ticks)), sum(map(float, late))
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stage heartbeat on {url}/metrics after {wait_s} s")
        time.sleep(0.5)


def scenario(capacity: int, overload: int, ramp: float, hold: float, stay: float,
             report: Path) -> dict[str, Any]:
    """One run on a fresh server: 3 speakers live, overload x capacity listeners."""
    speakers: list[subprocess.Popen[bytes]] = []
    with live_server("viral space", {"TOWNHALL_EDGE_CAPACITY": str(capacity)}) as served:
        url, space, host, proc = served
        try:
            tokens = [host, *bring_on_stage(url, space, host, ["speaker 1", "speaker 2"])]
            secs = int(ramp + hold + 30)
            for tok, hz in zip(tokens, (440, 660, 880), strict=True):
                speakers.append(spawn_tone_speaker(url, space, tok, hz, secs))
            ticks0, late0 = stage_counters(url)
            n = overload * capacity
            Console().rule(f"viral-space: {n} listeners at an edge capped at {capacity}")
            s = asyncio.run(storm(StormArgs(url, space, n, ramp, hold, workers=2,
                                            reactions=2, requests=0.2, report=report,
                                            stay=stay), Console()))
            ticks1, late1 = stage_counters(url)
            alive = proc.poll() is None and all(p.poll() is None for p in speakers)
        finally:
            stop_processes(speakers)
    return {**s, "n": n, "stage_ticks": ticks1 - ticks0, "stage_late": late1 - late0,
            "alive": alive}


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def main(argv: list[str]) -> dict[str, Any]:
    """Run the scenario at 1x (reference) and 3x one edge; reports with plots under HERE."""
    ap = argparse.ArgumentParser(prog="bench/scenarios/viral-space")
    ap.add_argument("--capacity", type=int, default=100, help="one edge's listener cap")
    ap.add_argument("--ramp", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=20.0)
    ap.add_argument("--stay", type=float, default=30.0,
                    help="mean seconds an admitted listener stays (churn frees capacity)")
    ap.add_argument("--report", default=str(HERE / "report"))
    args = ap.parse_args(argv)
    report = Path(args.report)
    runs = [scenario(args.capacity, k, args.ramp, args.hold, args.stay,
                     report if k == 3 else report / "reference-1x") for k in (1, 3)]

    def row(label: str, fn: Any, meaning: str = "") -> list[Any]:
        return [label, *(fn(r) for r in runs), meaning]

    rows = [
        row("listeners started", lambda r: r["n"], f"edge cap {args.capacity}"),
        row("got audio (still listening + left after their stay)",
            lambda r: r["connected"] + r["left"], "every admitted listener heard audio"),
        row("got in after being refused", lambda r: r["admitted_after_refusal"],
            "capacity freed by churn went to those waiting"),
        row("wait from first refusal to audio p50 / p99",
            lambda r: f"{_ms(r['wait_after_refusal_p50_ms'])} / "
                      f"{_ms(r['wait_after_refusal_p99_ms'])}", "full-jitter backoff"),
        row("still refused at the end / refusals", lambda r: f"{r['refused']} / {r['refusals']}",
            "answered 503/4503 with a retry delay, not dropped"),
        row("failed", lambda r: r["failed"], "reasons in report.json"),
        row("gaps heard by admitted listeners", lambda r: r["gaps"], "every chunk when 0"),
        row("announced skips", lambda r: r["skips"], ""),
        row("p99 time to first audio", lambda r: _ms(r["ttfa_p99_ms"]), ""),
        row("p99 delay behind live", lambda r: _ms(r["delay_p99_ms"]), ""),
        row("stage mixer ticks / late ticks during the storm",
            lambda r: f"{r['stage_ticks']:.0f} / {r['stage_late']:.0f}",
            "from the stage's own heartbeat (townhall_stage_*_total on /metrics)"),
        row("server and speakers still running", lambda r: "yes" if r["alive"] else "NO",
            "nobody restarted anything"),
        row("accounting balanced", lambda r: r["accounting_balanced"], ""),
    ]
    return {
        "title": "Scenario: viral Space (3 speakers, listeners to 3x one edge, with churn)",
        "command": f"python -m bench viral-space (capacity {args.capacity}, ramp {args.ramp} s, "
                   f"hold {args.hold} s, mean stay {args.stay} s); plots in "
                   f"{os.path.relpath(report)}/index.html",
        "columns": ["check", "1x capacity (reference)", "3x capacity", "meaning"],
        "rows": rows,
        "notes": "One run of each, the 1x reference first, each on a fresh `townhall serve` "
                 "(all roles on this 2-core machine, the storm's 2 workers and the 3 "
                 "speakers beside it). Admitted listeners leave after an exponential stay "
                 "(seeded), so refused ones can get in as capacity frees.",
    }
