"""Floods against one `townhall serve`: does anyone else's audio notice?

One server (all roles; the stage in its own process), two live Spaces each with a
`townhall speak` tone speaker and a normal WebSocket listener: the *target* Space and a
*bystander*. An attacker — a fresh guest hosting a Space of its own — then runs each flood
for a window, with an idle window (no flood) in every run as the baseline:

- ``whip-bomb``: WHIP offers with 213 ``m=audio`` sections (64 KB, and a 25 KB one) and 40
  (5 KB), in turn;
- ``whip-plain``: real aiortc offers (issue 13: 158 accepted in 5 s);

both at ``--offer-rate`` (30/s: issue 13's attacker's pace);
- ``slowloris``: 200 sockets sending request headers one line every 5 s;
- ``join-flood``: WebSocket joins to the target from this one address at 10× ``--join-rate``,
  each replaying from an old sequence number (``?from=``), waiting for a chunk, leaving.

Measured per window: the mixer's ticks and late ticks (> 20 ms) and its worst lateness, from
the stage's heartbeat on ``townhall.stages.*``; each listener's worst gap between chunks
(100 ms apart when all is well) and missing sequence numbers; what the server answered
the flood. Medians over ``--runs``.

    .venv/bin/python -m bench flood            (or, leaving the README alone:
    .venv/bin/python -m bench flood --no-readme -- --runs 1 --window 5)
    --src DIR runs the server from another source tree (e.g. `git archive main src | tar -x
    -C DIR`), to measure a version before a fix in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench._local import live_space, start_server
from bench._speakers import chunks_heard, spawn_tone_speaker
from bench.flood.measure import Ear, Heartbeats
from townhall.bus import NatsAuth, NatsBus, subjects
from townhall.bus.credentials import USERS_FILE, admin_auth
from townhall.procs import stop_process, stop_processes

TICKS = os.sysconf("SC_CLK_TCK")
PHASES = ("idle", "whip-bomb", "whip-plain", "slowloris", "join-flood")


def stage_child(parent: int) -> tuple[int, str]:
    """The pid of `townhall serve`'s stage child process and the NATS URL it was handed."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"--nats" in argv:
                return int(entry), argv[argv.index(b"--nats") + 1].decode()
    raise RuntimeError("no stage child process")


def server_auth(pid: int) -> NatsAuth | None:
    """The admin credentials `townhall serve` generated for its embedded NATS, if any."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    users = Path(argv[argv.index(b"--data") + 1].decode()) / USERS_FILE
    return admin_auth(users) if users.exists() else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


Mark = tuple[float, float, float]  # (monotonic, stage CPU s, serve process CPU s)


def last_seq(ear: Ear) -> int | None:
    return ear.heard[-1][1] if ear.heard else None


async def flood(phase: str, url: str, attacker: tuple[str, str], target: str, ears: list[Ear],
                args: argparse.Namespace, mark: Callable[[], Mark]) -> tuple[str, Mark, Mark]:
    """Run one flood for the window in a niced process of its own (so the flood's client
    competes as little as may be with the server for this machine's cores); a short
    account of what the server answered, and when the flood began and ended."""
    if phase == "idle":
        t0 = mark()
        await asyncio.sleep(args.window)
        return "—", t0, mark()
    space, token = attacker
    argv = ["--url", url, "--seconds", str(args.window)]
    if phase == "whip-bomb":
        argv += ["--space", space, "--token", token, "--rate", str(args.offer_rate)]
    elif phase == "whip-plain":
        argv += ["--space", space, "--token", token, "--rate", str(args.offer_rate)]
    elif phase == "slowloris":
        argv += ["--sockets", str(args.slow_sockets)]
    else:
        seq = ears[0].heard[-1][1] if ears[0].heard else 0
        argv += ["--space", target, "--rate", str(args.join_rate * 10),
                 "--from-seq", str(max(0, seq - 300))]
    proc = await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, "-m", "bench.flood.attacks", phase, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(args.window + 90):
            ready = await proc.stdout.readline()
            t0 = mark()
            out = await proc.stdout.read()
            t1 = mark()
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "flood process did not finish", mark(), mark()
    lines = out.decode().strip().splitlines()
    seen: dict[str, int] = json.loads(lines[-1]) if ready and lines else {}
    return ", ".join(f"{n} × {k}" for k, n in sorted(seen.items())), t0, t1


async def run_once(url: str, server: subprocess.Popen[bytes], args: argparse.Namespace,
                   progress: Progress, task: Any, logs: Path) -> list[dict[str, Any]]:
    """Two live Spaces with speakers and listeners; each phase in turn; a row per phase."""
    spaces = [live_space(url, "target"), live_space(url, "bystander")]
    attacker = live_space(url, "attacker")
    speakers = [spawn_tone_speaker(url, s, tok, hz, 3600, logs / f"speak{hz}.log")
                for (s, tok), hz in zip(spaces, (440, 660), strict=True)]
    stage, nats = stage_child(server.pid)
    bus = await NatsBus.connect([nats], setup=False, auth=server_auth(server.pid))

    def mark() -> Mark:
        return time.monotonic(), cpu_seconds(stage), cpu_seconds(server.pid)

    beats = Heartbeats()
    await bus.subscribe(subjects.STAGES, beats.on)
    ears = [Ear(), Ear()]
    rows: list[dict[str, Any]] = []
    try:
        async with chunks_heard(url, spaces[0][0], ears[0].on), \
                chunks_heard(url, spaces[1][0], ears[1].on):
            await asyncio.sleep(args.warm)  # speakers connected, heartbeats flowing
            for _ in range(300):
                if len(beats.seen) >= 3:
                    break
                await asyncio.sleep(0.1)
            for phase in args.phases:
                answered, m0, m1 = await flood(phase, url, attacker, spaces[0][0], ears,
                                               args, mark)
                t0, t1 = m0[0], m1[0]
                await asyncio.sleep(max(1.5, args.rest))  # the window's last report (≤ 1 s)
                ticks, late, worst = beats.window(t0 + 1.0, t1 + 1.0)
                row = {"phase": phase, "ticks": ticks, "late": late, "worst": worst,
                       "answered": answered, "stage_cpu": (m1[1] - m0[1]) / (t1 - t0),
                       "serve_cpu": (m1[2] - m0[2]) / (t1 - t0)}
                for name, ear in zip(("target", "bystander"), ears, strict=True):
                    row[f"{name}_gap"], row[f"{name}_missing"] = ear.window(t0, t1)
                rows.append(row)
                progress.advance(task)
    finally:
        await bus.close()
        stop_processes(speakers)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for space, token in [*spaces, attacker]:  # the next run starts from the same load
                with contextlib.suppress(httpx.HTTPError):
                    await http.post(f"/api/v1/spaces/{space}/end",
                                    headers={"Authorization": f"Bearer {token}"})
    return rows


def median_rows(runs: list[list[dict[str, Any]]]) -> list[list[str]]:
    """One README row per phase: medians over the runs."""
    out = []
    for i, phase in enumerate(r["phase"] for r in runs[0]):
        got = [run[i] for run in runs]

        def med(key: str, got: list[dict[str, Any]] = got) -> float:
            return float(statistics.median(r[key] for r in got))

        ticks = med("ticks")
        late = med("late")
        out.append([phase, f"{med('stage_cpu'):.1%}", f"{med('serve_cpu'):.1%}",
                    f"{late:.0f} of {ticks:.0f} ({late / ticks:.1%})" if ticks else "—",
                    f"{med('worst'):.0f} ms", f"{med('target_gap'):.0f} ms",
                    f"{med('target_missing'):.0f}", f"{med('bystander_gap'):.0f} ms",
                    f"{med('bystander_missing'):.0f}", got[-1]["answered"]])
    return out


def main(argv: list[str]) -> dict[str, Any]:
    """Repeated runs on one server; medians; rows for bench/README.md."""
    ap = argparse.ArgumentParser(prog="bench/flood")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=float, default=6.0, help="seconds per flood")
    ap.add_argument("--rest", type=float, default=2.0, help="seconds between floods")
    ap.add_argument("--warm", type=float, default=6.0, help="seconds before the first")
    ap.add_argument("--join-rate", type=float, default=5.0,
                    help="a normal join rate from one address (the flood is 10×)")
    ap.add_argument("--offer-rate", type=float, default=30.0,
                    help="WHIP offers a second (issue 13's attacker: about 30)")
    ap.add_argument("--slow-sockets", type=int, default=200)
    ap.add_argument("--src", default="", help="run the server from this source tree")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"which floods, in order (default: {','.join(PHASES)})")
    args = ap.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    if not set(args.phases) <= set(PHASES):
        ap.error(f"--phases: choose from {', '.join(PHASES)}")
    console = Console()
    logs = Path(tempfile.mkdtemp(prefix="townhall-bench-flood-"))
    env = {"PYTHONPATH": str(Path(args.src).resolve())} if args.src else None
    url, server = start_server(env)
    runs: list[list[dict[str, Any]]] = []
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("floods", total=args.runs * len(args.phases))
            for _ in range(args.runs):
                runs.append(asyncio.run(run_once(url, server, args, progress, task, logs)))
                for row in runs[-1]:
                    console.log(f"{row['phase']}: stage CPU {row['stage_cpu']:.1%}, api+edge "
                                f"{row['serve_cpu']:.1%}; late {row['late']}/{row['ticks']}, worst "
                                f"{row['worst']:.0f} ms, gaps {row['target_gap']:.0f}/"
                                f"{row['bystander_gap']:.0f} ms; {row['answered']}")
    finally:
        stop_process(server)
    columns = ["flood", "stage CPU", "api+edge CPU", "mixer late ticks", "worst tick",
               "target: worst gap", "target: missing", "bystander: worst gap", "bystander: missing",
               "server answered the flood (last run)"]
    rows = median_rows(runs)
    table = Table(*columns, title="floods")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    src = f", server from {args.src}" if args.src else ""
    return {
        "title": "Floods: does a bystander's audio notice?",
        "command": f"python -m bench flood (runs {args.runs}, window {args.window:g} s, "
                   f"offers {args.offer_rate:g}/s, joins {args.join_rate * 10:g}/s, "
                   f"{args.slow_sockets} slowloris "
                   f"sockets{src})",
        "columns": columns,
        "rows": rows,
        "notes": ("Medians over the runs, all on one server (both Spaces on one stage "
                  "process); idle is the baseline measured in the same runs. CPU = share of "
                  "one core used by the stage process and by the serve process (api + edge) "
                  "during the flood: it does not depend on what else the machine runs, "
                  "unlike lateness and gaps, which do. Late tick = a "
                  "mixer tick more than 20 ms behind its schedule (stage heartbeat); gap = "
                  "the longest wait between two chunks at a WebSocket listener (chunks are "
                  "100 ms apart), missing = sequence numbers never received. The attacker "
                  "is one fresh guest hosting its own Space; all floods come from this "
                  "machine, which also runs the server and both speakers."),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
