"""NATS ping margins: could a client declare its server dead after fewer missed pings?

Every townhall process pings its NATS server once a second and moves to another node
after 3 pings go unanswered (townhall.bus.bus). A false move happens when a PONG comes back
later than that: a loaded machine schedules the process late, or the process's own event
loop is blocked. This measures both on a live Space (`townhall serve`, a `townhall speak`
tone speaker) while the machine does whatever else it does (here: other engineers' test
suites): the PING->PONG round trip a client on this machine sees, 4 times a second, and
the stage process's own loop lateness (its heartbeat's worst tick lateness per second).

    .venv/bin/python -m bench natsping          (writes its table into bench/README.md)
    .venv/bin/python -m bench.natsping.run      (prints only)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from rich.progress import Progress

from bench._local import live_space, start_server, stop
from bench._speakers import bring_on_stage, spawn_tone_speaker
from townhall.bus import subjects
from townhall.bus.credentials import USERS_FILE, admin_auth, load_or_create_users
from townhall.bus.embedded import EmbeddedNats
from townhall.procs import stop_process

RUNS = 3
SECONDS = 40.0
EVERY_S = 0.25


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(nats_url: str, users: Path, seconds: float,
                  progress: Progress, task: Any) -> tuple[list[float], list[float]]:
    """PING->PONG round trips (s) of one client, and the stage's per-second worst lateness."""
    nc = await nats.connect(nats_url, **admin_auth(users).options())
    late: list[float] = []

    async def beat(msg: Any) -> None:
        late.append(float(json.loads(msg.data).get("max_late_ms", 0.0)) / 1000)

    await nc.subscribe(subjects.STAGES, cb=beat)
    rtts: list[float] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        t0 = time.perf_counter()
        await nc.flush(timeout=10)  # one PING, wait for its PONG
        rtts.append(time.perf_counter() - t0)
        progress.update(task, completed=elapsed)
        await asyncio.sleep(EVERY_S)
    await nc.close()
    return rtts, late


def main(argv: list[str]) -> dict[str, Any]:
    runs = int(argv[0]) if argv else RUNS
    rows = []
    load = os.getloadavg()[0]
    with Progress() as progress:
        for i in range(runs):
            data = Path(tempfile.mkdtemp(prefix="townhall-natsping-"))
            # Our own nats-server (as a cluster's would be), so the bench can log in too.
            server = EmbeddedNats(data / "nats", users=load_or_create_users(data))
            nats_url = server.start()
            url, proc = start_server(data=data, extra=[
                "--nats", nats_url, "--nats-auth-file", str(data / USERS_FILE)])
            try:
                space, host = live_space(url, "natsping")
                token = bring_on_stage(url, space, host, ["tone"])[0]
                speaker = spawn_tone_speaker(url, space, token, 440, SECONDS + 30)
                task = progress.add_task(f"run {i + 1}/{runs}", total=SECONDS)
                rtts, late = asyncio.run(measure(nats_url, data / USERS_FILE, SECONDS,
                                                 progress, task))
                speaker.terminate()
                stop(url, space, host, proc)
            finally:
                stop_process(proc)
                server.stop()
            rows.append([i + 1, len(rtts), f"{pct(rtts, 0.5) * 1000:.1f}",
                         f"{pct(rtts, 0.99) * 1000:.1f}", f"{max(rtts) * 1000:.0f}",
                         sum(1 for r in rtts if r > 1.0),
                         f"{pct(late, 0.99) * 1000:.0f}", f"{max(late, default=0) * 1000:.0f}"])
    notes = (f"{runs} runs of {SECONDS:g} s, one PING every {EVERY_S:g} s from a client "
             "process on the same machine; stage lateness = the stage heartbeat's worst tick "
             "lateness in each second (its event loop's stall), one live Space with a tone "
             f"speaker. Load average {load:.1f} at start: the machine was shared with other "
             "engineers' test suites. A client moves after 3 unanswered pings 1 s apart: a "
             "false move needs a PONG later than ~3 s (2 s with 2 pings).")
    return {"title": "NATS ping margins on a loaded machine",
            "command": ".venv/bin/python -m bench natsping",
            "columns": ["run", "pings", "RTT median ms", "RTT p99 ms", "RTT max ms",
                        "RTT > 1 s", "stage late p99 ms", "stage late max ms"],
            "rows": rows, "notes": notes}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    for row in result["rows"]:
        print(row)
    print(result["notes"])
