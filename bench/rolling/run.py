"""Rolling restart: every stage process of `townhall serve --stages N` stopped in turn.

One `townhall serve --stages 3` (api + edge in the parent; three supervised stage children
``<node>-stage-<i>``), M live Spaces with nobody speaking (each still publishes a chunk of
silence every 100 ms), and one WebSocket listener per Space on the edge. Then, for each
stage in turn: SIGTERM (what systemd or an operator's rolling restart sends), wait until
the supervisor has started it again and it owns Spaces again (placement gives a returning
stage the next orphans; with none, it has to wait for the next restart's), and go on.

Per Space, listener side: the longest wait between two chunks arriving (a chunk is 100 ms
of audio, so a steady Space waits ~0.1 s; anything above is silence a player hears unless
its own buffer covers it), and sequence numbers received twice (repeats) or never
(skipped, counting the edge's announced jumps). The lease bucket is watched to count the
Spaces each restart moved.

    .venv/bin/python -m bench rolling               (writes its table into bench/README.md)
    .venv/bin/python -m bench.rolling.run --spaces 10   (prints only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench._local import live_space, start_server
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Change, Message
from townhall.bus.credentials import USERS_FILE, admin_auth
from townhall.media.chunk import Chunk
from townhall.procs import stop_process

NODE = "bench"


@dataclass
class Heard:
    """What one listener heard, in arrival order: a sans-I/O record of seq and time."""

    last_seq: int | None = None
    last_at: float | None = None
    longest_gap_s: float = 0.0
    repeats: int = 0
    skipped: int = 0
    chunks: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (at, gap) > 0.3 s

    def chunk(self, seq: int, now: float) -> None:
        """A chunk arrived at ``now``."""
        if self.last_seq is not None and seq <= self.last_seq:
            self.repeats += 1
            return
        if self.last_seq is not None:
            self.skipped += seq - self.last_seq - 1
        if self.last_at is not None:
            gap = now - self.last_at
            self.longest_gap_s = max(self.longest_gap_s, gap)
            if gap > 0.3:
                self.gaps.append((now, gap))
        self.last_seq, self.last_at = seq, now
        self.chunks += 1

    def jump(self, frm: int, to: int) -> None:
        """The edge announced it skips ``frm``..``to``-1."""
        self.skipped += max(0, to - frm)
        self.last_seq = to - 1

    def reset(self) -> None:
        """Start a new window: what came before it does not count."""
        self.longest_gap_s, self.repeats, self.skipped, self.gaps = 0.0, 0, 0, []


async def listen(ws_base: str, space: str, heard: Heard, stop: asyncio.Event) -> None:
    """One cheap listener on /ws/<space>; resumes from the next seq if the socket drops."""
    while not stop.is_set():
        url = f"{ws_base}/ws/{space}"
        if heard.last_seq is not None:
            url += f"?from={heard.last_seq + 1}"
        with contextlib.suppress(OSError, WebSocketException, TimeoutError):
            async with connect(url, open_timeout=5, max_size=2**20) as ws:
                while not stop.is_set():
                    try:
                        data = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    if isinstance(data, bytes):
                        heard.chunk(Chunk.decode(data).seq, time.monotonic())
                        continue
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        msg = json.loads(data)
                        if msg.get("type") == "jump":
                            heard.jump(int(msg["from"]), int(msg["to"]))
        await asyncio.sleep(0.2)


class Leases:
    """The lease bucket as a watch shows it: holder per Space, moves per old holder."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.last: dict[str, str] = {}  # the latest holder, released or not
        self.moved_from: dict[str, int] = {}

        self.events: dict[str, list[tuple[float, str | None]]] = {}  # (seen at, holder)

    def __call__(self, change: Change) -> None:
        if change.value is None:  # released: the move counts when the next holder writes
            self.holders.pop(change.key, None)
            self.events.setdefault(change.key, []).append((time.monotonic(), None))
            return
        holder = change.value.decode()
        if self.holders.get(change.key) != holder:
            self.events.setdefault(change.key, []).append((time.monotonic(), holder))
        old = self.last.get(change.key)
        if old is not None and old != holder:
            self.moved_from[old] = self.moved_from.get(old, 0) + 1
        self.holders[change.key] = self.last[change.key] = holder

    def owned_by(self, node: str) -> int:
        return sum(1 for h in self.holders.values() if h == node)


def stage_pids(parent: int) -> dict[str, int]:
    """The stage children of ``parent`` by node id (from /proc)."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent or b"--node-id" not in argv:
            continue
        node = argv[argv.index(b"--node-id") + 1].decode()
        if node.startswith(f"{NODE}-stage-"):
            found[node] = int(proc.name)
    return found


def nats_url(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return argv[argv.index(b"--nats") + 1].decode().split(",")[0]


async def until(cond: Any, timeout: float, what: str) -> float:
    """Wait (bounded) until ``cond()``; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def breakdown(gaps: list[tuple[float, float]], events: list[tuple[float, str | None]]
              ) -> list[tuple[float, float, float, float]]:
    """Where each long gap went, from the lease watch: (gap, last chunk → lease released,
    released → taken by another stage, taken → first chunk heard)."""
    out = []
    for at, gap in gaps:
        start = at - gap
        released = next((t for t, h in events if h is None and start - 1 < t < at), None)
        if released is None:
            continue
        taken = next((t for t, h in events if h is not None and released <= t < at), None)
        if taken is not None:
            out.append((gap, released - start, taken - released, at - taken))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def rolling(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="townhall-rolling-"))
    url, proc = start_server(extra=["--stages", str(args.stages), "--node-id", NODE],
                             data=data)
    load = os.getloadavg()[0]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    bus: NatsBus | None = None
    watch = None
    try:
        pids: dict[str, int] = {}
        await until(lambda: len(pids.update(stage_pids(proc.pid)) or pids) == args.stages,
                    30, "the stage children")
        bus = await NatsBus.connect([nats_url(next(iter(pids.values())))], setup=False,
                                    auth=admin_auth(data / USERS_FILE))
        leases = Leases()
        watch = await bus.kv_watch(subjects.LEASES_BUCKET, leases)
        beats: dict[str, list[float]] = {}

        async def on_beat(msg: Message) -> None:
            beats.setdefault(msg.subject.rsplit(".", 1)[1], []).append(time.monotonic())

        await bus.subscribe(subjects.STAGES, on_beat)
        spaces = [live_space(url, f"rolling {i}")[0] for i in range(args.spaces)]
        heard = {s: Heard() for s in spaces}
        ws_base = url.replace("http://", "ws://")
        tasks = [asyncio.create_task(listen(ws_base, s, heard[s], stop)) for s in spaces]
        await until(lambda: all(h.chunks >= 10 for h in heard.values()), 60,
                    "every listener hearing its Space")
        with contextlib.suppress(TimeoutError):  # placement's jitter may leave one out
            await until(lambda: all(n in set(leases.holders.values()) for n in pids), 10,
                        "every stage owning Spaces")
        split0 = sorted(leases.owned_by(n) for n in pids)
        # The reference, same run: the same listeners while nothing is restarted.
        for h in heard.values():
            h.reset()
        with console.status(f"steady reference, {args.steady:.0f} s"):
            await asyncio.sleep(args.steady)
        steady = [h.longest_gap_s for h in heard.values()]
        steady_bad = (sum(h.repeats for h in heard.values()),
                      sum(h.skipped for h in heard.values()))
        for h in heard.values():
            h.reset()
        rows_restart: list[dict[str, Any]] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rolling restart", total=args.rounds * len(pids))
            for _ in range(args.rounds):
                for node in sorted(pids):
                    owned = leases.owned_by(node)
                    before = dict(leases.moved_from)
                    pid = stage_pids(proc.pid)[node]
                    progress.update(task, description=f"SIGTERM {node} ({owned} Spaces)")
                    t0 = time.monotonic()
                    os.kill(pid, signal.SIGTERM)
                    handed = await until(lambda n=node: leases.owned_by(n) == 0, 30,
                                         f"{node} handing over")
                    await until(lambda n=node, p=pid: stage_pids(proc.pid).get(n, p) != p,
                                30, f"{node} started again")
                    # Back = heartbeating again (twice: the others have heard it too),
                    # so the next stop's orphans can go to it.
                    restarted = time.monotonic()
                    await until(lambda n=node, r=restarted: sum(
                        b > r for b in beats.get(n, [])) >= 2, 60, f"{node} heartbeating")
                    back = time.monotonic() - t0
                    rows_restart.append({"node": node, "owned": owned, "handed_s": handed,
                                         "back_s": back,
                                         "moved": leases.moved_from.get(node, 0)
                                         - before.get(node, 0)})
                    # Let it settle: every Space heard again before the next stop.
                    mark = time.monotonic()
                    await until(lambda m=mark: all((h.last_at or 0) > m
                                                   for h in heard.values()), 20,
                                "every Space heard again")
                    progress.advance(task)
        await asyncio.sleep(1.0)
        split1 = sorted(leases.owned_by(n) for n in pids)
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 5)
        if watch is not None:
            await watch.stop()
        if bus is not None:
            await bus.close()
        stop_process(proc)
    parts = [b for s, h in heard.items()
             for b in breakdown(h.gaps, leases.events.get(s, []))]
    gaps = [h.longest_gap_s for h in heard.values()]
    worst = sorted(((h.longest_gap_s, s, h.gaps) for s, h in heard.items()), reverse=True)
    return {"gaps": gaps, "repeats": sum(h.repeats for h in heard.values()),
            "skipped": sum(h.skipped for h in heard.values()), "restarts": rows_restart,
            "steady": steady, "steady_bad": steady_bad, "load": load, "split0": split0,
            "split1": split1, "worst": worst[:3], "parts": parts}


def main(argv: list[str]) -> dict[str, Any]:
    """Run the rolling restart and return bench/README's table."""
    ap = argparse.ArgumentParser(prog="bench rolling")
    ap.add_argument("--spaces", type=int, default=30)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="times every stage is restarted")
    ap.add_argument("--steady", type=float, default=15.0,
                    help="seconds of the no-restart reference before the restarts")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    r = asyncio.run(rolling(args, console))
    for s in r["restarts"]:
        console.print(f"{s['node']}: owned {s['owned']}, released all in "
                      f"{s['handed_s']:.2f} s, restarted after {s['back_s']:.2f} s, "
                      f"moved {s['moved']}")
    for gap, space, big in r["worst"]:
        console.print(f"worst {space}: {gap:.2f} s; gaps > 0.3 s at "
                      f"{[round(g, 2) for _, g in big]}")
    parts = sorted(r["parts"], reverse=True)
    for gap, stop, take, first in parts[:5]:
        console.print(f"gap {gap:.2f} s: last chunk → released {stop:+.2f} s, released → "
                      f"taken {take:.2f} s, taken → first chunk heard {first:.2f} s")
    gaps = r["gaps"]
    moved = [s["moved"] for s in r["restarts"]]
    handed = [s["handed_s"] for s in r["restarts"]]
    steady = r["steady"]
    rows = [[f"rolling restart ({args.stages} stages × {args.rounds})", f"{len(gaps)}",
             f"{max(gaps):.2f} s", f"{pct(gaps, 0.99):.2f} s",
             f"{statistics.median(gaps):.2f} s",
             " / ".join(str(m) for m in moved), f"{max(handed):.2f} s",
             str(r["repeats"]), str(r["skipped"]),
             f"{' '.join(map(str, r['split0']))} → {' '.join(map(str, r['split1']))}",
             f"{r['load']:.1f}"],
            [f"reference: no restart, {args.steady:.0f} s", f"{len(steady)}",
             f"{max(steady):.2f} s", f"{pct(steady, 0.99):.2f} s",
             f"{statistics.median(steady):.2f} s", "—", "—", str(r["steady_bad"][0]),
             str(r["steady_bad"][1]),
             "—", "—"]]
    where = ""
    if parts:
        med = [statistics.median(p[i] for p in parts) for i in (1, 2, 3)]
        g, a, b, c = parts[0]
        where = (f" Where the {len(parts)} waits over 0.3 s went (lease watch in the bench): "
                 f"median last chunk → lease released {med[0]:+.2f} s, released → taken by "
                 f"another stage {med[1]:.2f} s, taken → its first chunk heard "
                 f"{med[2]:.2f} s; the longest ({g:.2f} s): {a:+.2f} / {b:.2f} / {c:.2f} s.")
    return {
        "title": "Rolling restart: every stage process stopped in turn",
        "command": f"python -m bench rolling --spaces {args.spaces} --stages {args.stages}"
                   f" --rounds {args.rounds} --steady {args.steady:.0f}",
        "columns": ["window", "Spaces", "max silence per Space",
                    "p99", "median", "Spaces moved per restart",
                    "slowest hand-over (SIGTERM → none owned)", "repeated seqs",
                    "skipped seqs", "Spaces per stage before → after", "load average"],
        "rows": rows,
        "notes": "Silence per Space = the longest wait between two chunks arriving at its "
                 "WebSocket listener over the whole rolling restart (one chunk = 100 ms, so "
                 "a steady Space waits ~0.10 s). Nobody speaks: each stage's silence gate "
                 "publishes its settled silence packet on every Space's clock. One "
                 "`townhall serve --stages N` (api + edge + embedded NATS in the parent), the "
                 "listeners in the bench process: "
                 "all on one machine, shared with other engineers' work while it ran."
                 + where,
    }


if __name__ == "__main__":
    import sys
    print(json.dumps(main(sys.argv[1:]), indent=2))
