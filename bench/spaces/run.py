"""Live Spaces per stage core: stage CPU as Spaces are added, for 0, 1 and 3 active
speakers per Space, this version and (``--before-src``) another in the same run, and Janus
AudioBridge (``--janus``) hosting the same rooms with the same senders.

    .venv/bin/python -m bench spaces -- --before-src DIR [--janus]
    .venv/bin/python bench/spaces/run.py --spaces0 0,50,100,200 --spaces1 5,10,20

The stage runs alone on core 0 (``taskset``: ``townhall serve --roles stage`` against the
bench's own nats-server); everything else (nats-server, this process and its speakers) on
core 1. Spaces go live by writing their snapshot to the ``spaces`` bucket, as the api does
(the api's creation budget would throttle a ramp of hundreds); speakers are in-process
aiortc peers sending pre-encoded 20 ms Opus tones (VOIP, in-band FEC, as `townhall speak`
sends), offered straight to the stage over NATS (``townhall.stage.whip.<id>``) as the api
forwards them. At each step: settle, then stage CPU over the window (/proc, all threads)
and late ticks from the stage's own heartbeat (``townhall.stages.<node>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from rich.console import Console
from rich.progress import Progress

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from bench.fanout.servers import proc_cpu_s  # noqa: E402
from townhall.bus import NatsBus, subjects  # noqa: E402
from townhall.bus.bus import Message  # noqa: E402
from townhall.bus.embedded import EmbeddedNats  # noqa: E402
from townhall.cli.speak import SpeakerEncoder  # noqa: E402
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from townhall.procs import stop_process  # noqa: E402
from townhall.room.snapshot import Person, Space, Speaker, encode  # noqa: E402

STAGE_CPU = 0
REST_CPU = 1
LATE_OK = 0.001  # late ticks below 0.1 %
FULL = 0.8       # a ramp stops once the server under test uses this share of its core
console = Console(width=None if sys.stdout.isatty() else 160)


def pin(cpu: int) -> list[str]:
    """Run on ``cpu`` only; as root, at a real-time priority (round robin): the machine may
    be shared, and late ticks should measure the server, not its neighbours. Ramps stop at
    ``FULL`` of the core, so the neighbours keep the rest (and the kernel's RT throttle)."""
    rt = ["chrt", "-r", "10"] if os.geteuid() == 0 and shutil.which("chrt") else []
    return [*rt, "taskset", "-c", str(cpu)] if shutil.which("taskset") else rt


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (threads included)."""
    total = 0.0
    for entry in [str(pid), *children(pid)]:
        with contextlib.suppress(OSError, ValueError):
            total += proc_cpu_s(int(entry))
    return total


def children(pid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(entry)
    return found


def tone_packets(hz: float, seconds: float = 2.0) -> list[bytes]:
    """A speaker's uplink: ``seconds`` of a tone as `townhall speak` encodes it (looped)."""
    enc = SpeakerEncoder()
    frames = int(seconds * SAMPLE_RATE / FRAME_SAMPLES)
    packets: list[bytes] = []
    for i in range(frames + 10):
        t = (np.arange(FRAME_SAMPLES) + i * FRAME_SAMPLES) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * hz * t) * 0.3 * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, i * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets[-frames:]


class PacketTrack(MediaStreamTrack):
    """Pre-encoded Opus packets in real time (aiortc sends av.Packets as they are)."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self.packets = packets
        self.n = 0
        self.start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.n * 0.020 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self.packets[self.n % len(self.packets)])
        packet.pts = self.n * FRAME_SAMPLES
        packet.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.n += 1
        return packet


def deaf(pc: RTCPeerConnection) -> None:
    """Drop the return feed's RTP on arrival: the stage still encodes and sends it (that
    is measured), but the load generator neither buffers nor decodes it, so one process
    can pace many more speakers."""

    async def drop(packet: Any, arrival_time_ms: int) -> None:
        return None

    for transceiver in pc.getTransceivers():
        transceiver.receiver._handle_rtp_packet = drop  # type: ignore[method-assign]


class Heartbeat:
    """The stage's latest report (a plain class: `python -m bench` loads this file
    without registering it as a module, which dataclasses need)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}

    async def on_report(self, msg: Message) -> None:
        with contextlib.suppress(ValueError):
            self.latest = json.loads(msg.data)


async def until(check: Callable[[], bool], bound_s: float, what: str) -> None:
    deadline = time.monotonic() + bound_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {bound_s:.0f} s: {what}")
        await asyncio.sleep(0.1)


class TownhallStage:
    """`townhall serve --roles stage` (this tree or another) on core 0, its own NATS."""

    def __init__(self, work: Path, src: str) -> None:
        self.work = work
        self.src = src
        self.nats = EmbeddedNats(work / "nats")
        self.proc: subprocess.Popen[bytes] | None = None
        self.bus: NatsBus | None = None
        self.beat = Heartbeat()
        self.peers: list[RTCPeerConnection] = []
        self.tracks: list[PacketTrack] = []
        self.spaces: list[str] = []

    async def start(self) -> None:
        url = await asyncio.to_thread(self.nats.start)  # on core 1, as this process
        if os.geteuid() == 0 and self.nats.proc is not None:  # the stage's bus: not starved
            os.setpriority(os.PRIO_PROCESS, self.nats.proc.pid, -10)
        self.bus = await NatsBus.connect([url], name="bench-spaces")
        await self.bus.subscribe(subjects.STAGES, self.beat.on_report)
        self.proc = self._spawn(url)
        await until(lambda: bool(self.beat.latest), 60, "the stage's first heartbeat")

    def _spawn(self, url: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": self.src} if self.src else dict(os.environ)
        env["TOWNHALL_STAGE_MAX_SPACES"] = "0"  # no budget: the ramp finds the limit
        log = (self.work / "stage.log").open("wb")  # kept open for the child
        return subprocess.Popen(
            [*pin(STAGE_CPU), sys.executable, "-m", "townhall", "serve", "--roles", "stage",
             "--nats", url, "--data", str(self.work / "data"), "--log-level", "warning",
             "--node-id", "bench-stage"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def cpu_s(self) -> float:
        assert self.proc is not None
        return tree_cpu_s(self.proc.pid)

    def owned(self) -> int:
        return len(self.beat.latest.get("spaces", []))

    async def add_spaces(self, n: int, speakers: int) -> None:
        """``n`` more live Spaces, each with ``speakers`` speakers connected."""
        assert self.bus is not None
        new = []
        for _ in range(n):
            i = len(self.spaces)
            space = f"bench{i:05d}"
            stage = [Speaker(f"{space}-s{k}", f"speaker {k}") for k in range(speakers)]
            snap = Space(id=space, title="spaces bench", description="", state="live",
                         version=1, private=False, host=Person("bench", "Bench"),
                         created_at=time.time(), stage=stage)
            await self.bus.kv_put(subjects.SPACES_BUCKET, space, encode(snap))
            self.spaces.append(space)
            new.append((space, stage))
        want = len(self.spaces)
        await until(lambda: self.owned() >= want, 60, f"the stage owning {want} Spaces")
        for space, stage in new:
            for k, who in enumerate(stage):
                await self.speak(space, who.id, 200 + 110 * k)

    async def speak(self, space: str, identity: str, hz: float) -> None:
        assert self.bus is not None
        pc = RTCPeerConnection()
        track = PacketTrack(PACKETS[hz])
        pc.addTransceiver(track, direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        payload = json.dumps({"identity": identity, "name": identity,
                              "sdp": pc.localDescription.sdp}).encode()
        for _ in range(50):
            msg = await self.bus.request(subjects.whip(space), payload, timeout=15)
            reply = json.loads(msg.data)
            if reply.get("status") == 201:
                break
            await asyncio.sleep(0.2)  # 503 stage-busy: its negotiation gate is full
        else:
            raise RuntimeError(f"the stage refused a speaker: {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        deaf(pc)
        self.peers.append(pc)
        self.tracks.append(track)

    async def stop(self) -> None:
        for pc in self.peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 2)
        if self.proc is not None:
            await asyncio.to_thread(stop_process, self.proc)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        await asyncio.to_thread(self.nats.stop)


PACKETS: dict[float, list[bytes]] = {}


async def ramp(label: str, src: str, speakers: int, steps: list[int], args: argparse.Namespace,
               progress: Progress, task: Any) -> list[dict[str, Any]]:
    """Add Spaces step by step; CPU and late ticks at each."""
    rows = []
    work = Path(tempfile.mkdtemp(prefix=f"townhall-bench-spaces-{label}-"))
    stage = TownhallStage(work, src)
    try:
        await stage.start()
        for n in steps:
            try:
                await stage.add_spaces(n - len(stage.spaces), speakers)
            except (TimeoutError, RuntimeError) as exc:  # the stage cannot take more
                console.log(f"{label} {speakers} speakers × {n} Spaces: {exc}")
                rows.append({"version": label, "speakers": speakers, "spaces": n,
                             "failed": str(exc)})
                break
            await asyncio.sleep(args.settle)
            before = dict(stage.beat.latest)
            cpu0, t0 = stage.cpu_s(), time.monotonic()
            await asyncio.sleep(args.window)
            cpu = (stage.cpu_s() - cpu0) / (time.monotonic() - t0)
            after = stage.beat.latest
            ticks = after.get("ticks", 0) - before.get("ticks", 0)
            late = after.get("late_frames", 0) - before.get("late_frames", 0)
            silent = after.get("silent_ticks", 0) - before.get("silent_ticks", 0)
            rows.append({"version": label, "speakers": speakers, "spaces": n, "cpu": cpu,
                         "ticks": ticks, "late": late, "silent": silent,
                         "max_late_ms": after.get("max_late_ms", 0.0)})
            console.log(f"{label} {speakers} speakers × {n} Spaces: stage CPU {cpu:.1%}, "
                        f"late {late}/{ticks}, silent ticks {silent}")
            progress.advance(task)
            if cpu > FULL or (ticks and late / ticks > 0.05):
                break  # the core is full: more Spaces only measure the overload
    finally:
        await stage.stop()
    return rows


def unheard(rows: list[dict[str, Any]]) -> set[tuple[int, int]]:
    """(speakers, Spaces) steps where the stage found active speakers silent in more than
    1 % of ticks (the load generator could not pace them all): not a measurement of that
    many active Spaces, for either version (only this version's stage counts it)."""
    return {(r["speakers"], r["spaces"]) for r in rows
            if "failed" not in r and r["speakers"] and r["ticks"]
            and r.get("silent", 0) > 0.01 * r["ticks"]}


def capacity(rows: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(CPU per Space, Spaces per core, most Spaces measured with late ticks < 0.1 %) of
    one ramp, from its largest step with late ticks below 0.1 %: that step's stage CPU
    divided among its Spaces (fixed costs included, so never flattering)."""
    failed = [r for r in rows if "failed" in r]
    ok = [r for r in rows if "failed" not in r and r["spaces"] and r["ticks"]
          and r["late"] / r["ticks"] < LATE_OK]
    if not ok:
        return "—", "—", "0" + (f" (could not take {failed[0]['spaces']})" if failed else "")
    top = max(ok, key=lambda r: r["spaces"])
    each = top["cpu"] / top["spaces"]
    most = str(top["spaces"]) + (f" (could not take {failed[0]['spaces']})" if failed else "")
    return f"{each:.2%}", f"{1 / each:.0f}" if each > 0 else "∞", most


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench/spaces")
    ap.add_argument("--before-src", default="",
                    help="a directory holding another version's src/ (the 'before' rows; "
                         "e.g. `git archive <commit> src | tar -x -C DIR`)")
    ap.add_argument("--spaces0", default="0,50,100,200,400")
    ap.add_argument("--spaces1", default="0,5,10,20,40")
    ap.add_argument("--spaces3", default="0,3,6,12")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--janus", action="store_true", help="also Janus AudioBridge")
    ap.add_argument("--save", default="", help="write the measured steps to this JSON file")
    ap.add_argument("--table-from", default="",
                    help="render the table from a --save file instead of measuring")
    args = ap.parse_args(argv)
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        return render(saved, saved["argv"])
    for k in range(3):
        PACKETS[200 + 110 * k] = tone_packets(200 + 110 * k)
    versions = [("after", "")]
    if args.before_src:
        versions.insert(0, ("before", str(Path(args.before_src).resolve() / "src")))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {REST_CPU})
        if os.geteuid() == 0:  # the speakers' pacing: the machine may be shared
            os.setpriority(os.PRIO_PROCESS, 0, -5)
    plans = [(0, [int(x) for x in args.spaces0.split(",")]),
             (1, [int(x) for x in args.spaces1.split(",")]),
             (3, [int(x) for x in args.spaces3.split(",")])]
    rows: list[dict[str, Any]] = []
    with Progress(console=console) as progress:
        task = progress.add_task("spaces", total=sum(len(s) for _, s in plans) * len(versions))
        for speakers, steps in plans:
            for label, src in versions:
                rows += asyncio.run(ramp(label, src, speakers, steps, args, progress, task))
    janus_rows: list[dict[str, Any]] = []
    janus_note = "Janus AudioBridge: not run (pass --janus)."
    if args.janus:
        from bench.spaces.janus import janus_ramps
        janus_rows, janus_note = janus_ramps(plans, args, PACKETS)
    saved = {"argv": argv, "versions": [v for v, _ in versions], "plans": plans,
             "rows": rows, "janus_rows": janus_rows, "janus_note": janus_note}
    if args.save:
        Path(args.save).write_text(json.dumps(saved, indent=1))
    return render(saved, argv)


def render(saved: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """The README table of a run's steps."""
    rows, janus_rows, janus_note = saved["rows"], saved["janus_rows"], saved["janus_note"]
    versions = saved["versions"]
    plans = saved["plans"]
    bad = unheard(rows)
    valid = [r for r in rows if (r["speakers"], r["spaces"]) not in bad]
    table = []
    for speakers, _ in plans:
        for label in versions:
            ramp_rows = [r for r in valid if r["version"] == label and r["speakers"] == speakers]
            each, per_core, most = capacity(ramp_rows)
            measured = [r for r in ramp_rows if "failed" not in r]
            top = max(measured, key=lambda r: r["spaces"]) if measured else None
            late = (f"{top['late']}/{top['ticks']}" if top else "—")
            cpu = f"{top['cpu']:.1%} at {top['spaces']}" if top else "—"
            table.append([str(speakers), label, each, per_core, most, cpu, late])
        for r in [r for r in janus_rows if r["speakers"] == speakers]:
            table.append([str(speakers), "Janus AudioBridge", r["each"], r["per_core"],
                          r["most"], r["cpu"], "—"])
    steps_text = "; ".join(
        f"{r['version']} {r['speakers']}sp×{r['spaces']}: " + (
            f"{r['cpu']:.1%} ({r['late']}/{r['ticks']} late"
            + (", speakers not all heard: left out" if (r["speakers"], r["spaces"]) in bad
               else "") + ")" if "failed" not in r else "not all taken") for r in rows)
    result = {
        "title": "Live Spaces per stage core (silence fast path, one ticker)",
        "command": "python -m bench spaces -- " + " ".join(argv),
        "columns": ["speakers per Space", "version", "stage CPU per Space",
                    "Spaces per core", "most Spaces measured, late < 0.1 %",
                    "stage CPU at the last step", "late ticks at the last step"],
        "rows": table,
        "notes": ("Stage (`townhall serve --roles stage`) alone on core 0 at a real-time "
                  "priority (the machine was shared with other engineers' test runs); "
                  "nats-server, the bench and its aiortc speakers on core 1. Speakers send a "
                  "20 ms Opus tone (VOIP, FEC) all the time: 'active'. CPU per Space = the "
                  "stage's CPU at the largest step with late ticks < 0.1 %, divided by its "
                  "Spaces (fixed costs included); Spaces per core = 1 / that. A ramp stops "
                  "once the stage uses 80 % of its core or 5 % of ticks are late. before = "
                  "the source tree given by --before-src. " + janus_note
                  + " Steps (stage CPU, late ticks in the window): " + steps_text),
    }
    console.print(json.dumps(result, indent=1, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
