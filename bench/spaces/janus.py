"""The reference: Janus AudioBridge (Debian's ``janus``) hosting the same rooms with the same
senders, alone on core 0, its CPU per room.

AudioBridge mixes each room in a thread of its own and sends every participant their own
mix-minus, encoded per participant: the same work as the stage's returns, with no program
encoded once for an audience (a room with nobody in it still wakes every 20 ms). Participants join
through Janus's HTTP API (one session, a handle per participant, events by long poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.spaces.run import FULL, PacketTrack, console, deaf, pin, tree_cpu_s
from townhall.bus.embedded import free_port
from townhall.procs import stop_process

CPU = 0


def ensure_janus() -> str:
    """The janus binary; as root, apt-get installs Debian's package when it is missing."""
    found = shutil.which("janus")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("janus is not installed: `sudo apt-get install janus`")
    subprocess.run(["apt-get", "install", "-y", "janus"], check=True, capture_output=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("janus")
    if not found:
        raise RuntimeError("apt-get could not install janus")
    return found


def janus_dir(kind: str) -> str:
    """Where Debian's janus keeps its plugins or transports."""
    for line in subprocess.run(["dpkg", "-L", "janus"], capture_output=True,
                               text=True).stdout.splitlines():
        if line.rstrip("/").endswith(f"/janus/{kind}"):
            return line
    raise RuntimeError(f"no janus {kind} directory in the janus package")


class Janus:
    """Janus with only the AudioBridge plugin and the HTTP transport, on one core."""

    def __init__(self, work: Path) -> None:
        binary = ensure_janus()
        self.port = free_port()
        self.dir = work / "janus"
        self.dir.mkdir(parents=True, exist_ok=True)
        plugins, transports = janus_dir("plugins"), janus_dir("transports")
        keep_plugin, keep_transport = "libjanus_audiobridge.so", "libjanus_http.so"
        no_plugins = ",".join(p for p in os.listdir(plugins)
                              if p.endswith(".so") and p != keep_plugin)
        no_transports = ",".join(t for t in os.listdir(transports)
                                 if t.endswith(".so") and t != keep_transport)
        (self.dir / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{self.dir}"
  plugins_folder = "{plugins}"
  transports_folder = "{transports}"
  log_to_stdout = false
  log_to_file = "{self.dir}/janus.log"
  debug_level = 3
  session_timeout = 120
}}
media: {{ }}
nat: {{ ignore_mdns = true }}
plugins: {{ disable = "{no_plugins}" }}
transports: {{ disable = "{no_transports}" }}
events: {{ broadcast = false }}
""")
        (self.dir / "janus.transport.http.jcfg").write_text(f"""general: {{
  json = "compact"
  base_path = "/janus"
  http = true
  port = {self.port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false }}
""")
        (self.dir / "janus.plugin.audiobridge.jcfg").write_text("general: { }\n")
        self.log = (self.dir / "stdout.log").open("wb")
        self.proc = subprocess.Popen(
            [*pin(CPU), binary, "-F", str(self.dir), "-C", str(self.dir / "janus.jcfg")],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/janus"
        self.http = httpx.AsyncClient(timeout=30)
        self.session = 0
        self.ids = itertools.count(1)
        self.events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.poller: asyncio.Task[None] | None = None
        self.peers: list[RTCPeerConnection] = []
        self.rooms = 0

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": f"t{next(self.ids)}"}
        r = await self.http.post(self.url + path, json=body)
        r.raise_for_status()
        reply: dict[str, Any] = r.json()
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus refused {body}: {reply}")
        return reply

    async def start(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.http.get(self.url + "/info")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"janus did not start; see {self.dir}") from None
                await asyncio.sleep(0.2)
        self.session = (await self.call("", {"janus": "create"}))["data"]["id"]
        self.poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = await self.http.get(f"{self.url}/{self.session}?maxev=10")
                got = r.json()
                for ev in got if isinstance(got, list) else [got]:
                    queue = self.events.get(ev.get("sender", 0))
                    if queue is not None:
                        queue.put_nowait(ev)

    async def handle(self) -> int:
        reply = await self.call(f"/{self.session}",
                                {"janus": "attach", "plugin": "janus.plugin.audiobridge"})
        handle = int(reply["data"]["id"])
        self.events[handle] = asyncio.Queue()
        return handle

    async def add_room(self, speakers: list[tuple[list[bytes], str]]) -> None:
        """One more room with these speakers (their packets, their name) joined."""
        self.rooms += 1
        room = 1000 + self.rooms
        admin = await self.handle()
        await self.call(f"/{self.session}/{admin}", {"janus": "message", "body": {
            "request": "create", "room": room, "sampling_rate": 48000,
            "audiolevel_event": False, "record": False}})
        for packets, name in speakers:
            handle = await self.handle()
            pc = RTCPeerConnection()
            pc.addTransceiver(PacketTrack(packets), direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            await self.call(f"/{self.session}/{handle}", {
                "janus": "message", "body": {"request": "join", "room": room,
                                             "display": name},
                "jsep": {"type": "offer", "sdp": pc.localDescription.sdp}})
            deadline = time.monotonic() + 20
            while True:
                ev = await asyncio.wait_for(self.events[handle].get(),
                                            max(0.1, deadline - time.monotonic()))
                if "jsep" in ev:
                    break
            await pc.setRemoteDescription(RTCSessionDescription(
                sdp=ev["jsep"]["sdp"], type=ev["jsep"]["type"]))
            deaf(pc)
            self.peers.append(pc)

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
        for pc in self.peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 2)
        await self.http.aclose()
        await asyncio.to_thread(stop_process, self.proc)
        self.log.close()


async def janus_ramp(speakers: int, steps: list[int], settle: float, window: float,
                     packets: dict[float, list[bytes]]) -> list[dict[str, Any]]:
    rows = []
    janus = Janus(Path(tempfile.mkdtemp(prefix="townhall-bench-janus-")))
    try:
        await janus.start()
        for n in steps:
            while janus.rooms < n:
                await janus.add_room([(packets[200 + 110 * k], f"r{janus.rooms}s{k}")
                                      for k in range(speakers)])
            await asyncio.sleep(settle)
            cpu0, t0 = janus.cpu_s(), time.monotonic()
            await asyncio.sleep(window)
            cpu = (janus.cpu_s() - cpu0) / (time.monotonic() - t0)
            rows.append({"spaces": n, "cpu": cpu})
            console.log(f"janus {speakers} speakers × {n} rooms: CPU {cpu:.1%}")
            if cpu > FULL:
                break
    finally:
        await janus.stop()
    return rows


def janus_ramps(plans: list[tuple[int, list[int]]], args: Any,
                packets: dict[float, list[bytes]]) -> tuple[list[dict[str, Any]], str]:
    """One row per speaker count (CPU per room, rooms per core), and a note."""
    out = []
    steps_text = []
    try:
        for speakers, steps in plans:
            rows = asyncio.run(janus_ramp(speakers, steps, args.settle, args.window, packets))
            top = max(rows, key=lambda r: r["spaces"])
            each = top["cpu"] / top["spaces"] if top["spaces"] else 0.0
            out.append({"speakers": speakers, "each": f"{each:.2%}",
                        "per_core": f"{1 / each:.0f}" if each > 0 else "∞",
                        "most": str(top["spaces"]),
                        "cpu": f"{top['cpu']:.1%} at {top['spaces']}"})
            steps_text += [f"janus {speakers}sp×{r['spaces']}: {r['cpu']:.1%}" for r in rows]
    except Exception as exc:  # say why in the table's notes rather than lose the run
        return out, f"Janus AudioBridge: could not be run here ({exc!r})."
    return out, ("Janus AudioBridge (Debian's janus, HTTP transport, one session, a handle "
                 "per participant; rooms at 48 kHz) on core 0 at the same priority with the "
                 "same senders; it has no late-tick counter; an empty room's mixer still "
                 "wakes every 20 ms. Janus steps: " + "; ".join(steps_text) + ".")
