"""Space lists with many Spaces in the bucket: time and size of `GET /api/v1/spaces`.

N Spaces (98 % ended, 1 % live, 1 % scheduled) go straight into the `spaces` bucket of a
fresh nats-server; then `townhall serve --nats` answers list requests. `--before-src DIR`
runs another version's src/ the same way, in the same run (it read every key per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from townhall.bus import NatsBus, subjects
from townhall.bus.embedded import EmbeddedNats, free_port
from townhall.procs import stop_process
from townhall.room import rules
from townhall.room.snapshot import to_doc

QUERIES = ("", "?state=live", "?state=ended")


def _doc(n: int) -> dict[str, Any]:
    snap = to_doc(rules.create(f"{n:010d}", rules.Actor("ada", "Ada"), title=f"Space {n}",
                               now=1e9 + n))
    kind = n % 100
    if kind:
        snap |= {"state": "live", "started_at": 1e9 + n}
    if kind > 1:
        snap |= {"state": "ended", "ended_at": 2e9 + n}
    return snap


async def _fill(url: str, n: int) -> None:
    bus = await NatsBus.connect([url])
    for at in range(0, n, 250):
        await asyncio.gather(*(bus.kv_create(subjects.SPACES_BUCKET, d["id"],
                                             json.dumps(d).encode())
                               for d in map(_doc, range(at, min(n, at + 250)))))
    await bus.close()


def _serve(nats: str, data: Path, src: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    proc = subprocess.Popen([sys.executable, "-m", "townhall", "serve", "--roles", "api",
                             "--port", str(port), "--data", str(data), "--nats", nats],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_process(proc, 10)
    raise TimeoutError("townhall serve did not come up")


def _measure(url: str, query: str, runs: int) -> tuple[float, int]:
    times, size = [], 0
    with httpx.Client(timeout=120) as c:
        for _ in range(runs):
            t = time.perf_counter()
            r = c.get(f"{url}/api/v1/spaces{query}")
            times.append(time.perf_counter() - t)
            size = len(r.content)
    return statistics.median(times) * 1000, size


def main(argv: list[str]) -> dict[str, Any]:
    """Rows for bench/README.md."""
    ap = argparse.ArgumentParser(prog="bench/lists")
    ap.add_argument("--spaces", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--before-src", default="", help="another version's checkout (its src/)")
    args = ap.parse_args(argv)
    rows: list[list[Any]] = []
    kinds = [("townhall", "")] + ([("townhall-before", str(Path(args.before_src) / "src"))]
                                  if args.before_src else [])
    for n in args.spaces:
        work = Path(tempfile.mkdtemp(prefix="bench-lists-"))
        nats = EmbeddedNats(work / "nats")
        try:
            url = nats.start()
            asyncio.run(_fill(url, n))
            results: dict[tuple[str, str], tuple[float, int]] = {}
            for kind, src in kinds:
                server, proc = _serve(url, work / kind, src)
                try:
                    for q in QUERIES:
                        results[kind, q] = _measure(server, q, args.runs)
                finally:
                    stop_process(proc, 10)
            for q in QUERIES:
                for kind, _ in kinds:
                    ms, size = results[kind, q]
                    ratio = results.get(("townhall-before", q), (ms, 0))[0] / max(ms, 1e-9)
                    rows.append([n, f"GET /api/v1/spaces{q}", kind, f"{ms:.1f}",
                                 f"{size / 1024:.0f}", f"{ratio:.0f}x" if kind == "townhall"
                                 and args.before_src else "—"])
        finally:
            nats.stop()
            shutil.rmtree(work, ignore_errors=True)
    return {"title": "Space lists from the index",
            "command": "python -m bench lists " + " ".join(argv),
            "columns": ["Spaces in the bucket", "request", "server", "median ms", "KB",
                        "faster than before"],
            "rows": rows,
            "notes": "98 % of the Spaces ended, 1 % live, 1 % scheduled; one api process "
                     "(`serve --roles api`) on a fresh nats-server, the client on the same "
                     "machine, one keep-alive connection. townhall answers one page (50) "
                     "from its index; -before read every key of the bucket per request and "
                     "answered every live and scheduled Space at once."}
