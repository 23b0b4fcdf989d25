"""The two servers under test, each pinned to one core, and the one source feeding both.

The source encodes a 440 Hz tone once (libopus via PyAV, 32 kbps, 20 ms packets), then
every 100 ms publishes a Chunk on ``townhall.<space>.media`` for the townhall edge AND
writes the same packets as one Ogg page (townhall's own Ogg writer) to Icecast's source
mount: same stream, same page interval, same bytes per listener. With ``page_ms`` above 100
the Icecast pages carry several chunks (the edge under test then runs with the same
delivery floor, TOWNHALL_EDGE_INTERVAL_MS, for the like-for-like row).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np

from townhall.bus import Bus, subjects
from townhall.bus.embedded import free_port
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.ogg import OggOpusStream
from townhall.procs import stop_process
from townhall.room.snapshot import Person, Space, encode

CHUNK_S = 0.1
PACKETS_PER_CHUNK = 5
SOURCE_PASSWORD = "bench-source"
MOUNT = "/bench.opus"


def tone_packets(seconds: float = 4.0, freq: float = 440.0) -> list[bytes]:
    """Opus packets of a tone; 4 s of 440 Hz is a whole number of cycles, so it loops clean."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = SAMPLE_RATE, "mono", "s16", 32_000
    enc.open()
    packets: list[bytes] = []
    for i in range(int(seconds * SAMPLE_RATE / FRAME_SAMPLES) + 4):
        t = (np.arange(FRAME_SAMPLES) + i * FRAME_SAMPLES) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * freq * t) * 12_000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, i * FRAME_SAMPLES
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets[:int(seconds * SAMPLE_RATE / FRAME_SAMPLES)]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def wait_http(url: str, ok: tuple[int, ...] = (200,), bound_s: float = 60) -> None:
    """Until ``url`` answers one of ``ok`` (bounded)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {bound_s:.0f} s")


def ensure_icecast() -> str:
    """The icecast2 binary; as root, apt-get installs Debian's package when it is missing."""
    found = shutil.which("icecast2")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("icecast2 is not installed: run `sudo apt-get install icecast2` "
                           "(Debian/Ubuntu), or run the bench as root to install it, or "
                           "leave Icecast out with --servers townhall-ogg,townhall-ws")
    subprocess.run(["apt-get", "install", "-y", "icecast2"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("icecast2")
    if not found:
        raise RuntimeError("icecast2 is not installed and apt-get could not install it")
    return found


class Icecast:
    """Debian's Icecast 2 on a free port with a config sized for the run."""

    def __init__(self, workdir: Path, clients: int, cpu: int) -> None:
        binary = ensure_icecast()  # first: installing it creates the user it runs as
        self.port = free_port()
        self.dir = workdir / "icecast"
        self.dir.mkdir(parents=True, exist_ok=True)
        as_root = os.geteuid() == 0
        owner = ("<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
                 if as_root else "")
        (self.dir / "icecast.xml").write_text(f"""<icecast>
  <limits><clients>{clients + 10}</clients><sources>2</sources>
    <queue-size>524288</queue-size><client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>4096</burst-size></limits>
  <authentication><source-password>{SOURCE_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>bench-admin</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{self.port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{self.dir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
""")
        if as_root:  # icecast drops to its own user, which must reach its log directory
            workdir.chmod(0o755)
            shutil.chown(self.dir, "icecast2", "icecast")
        self.proc = subprocess.Popen(
            [*_pinned(cpu), binary, "-c", str(self.dir / "icecast.xml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/status-json.xsl")

    def stop(self) -> None:
        """Terminate (kill after 10 s)."""
        stop_process(self.proc)


class TownhallEdge:
    """`townhall serve --roles edge` against the bench's NATS, on one core."""

    def __init__(self, workdir: Path, nats_url: str, capacity: int, cpu: int,
                 src: str = "", interval_ms: int = 100) -> None:
        self.port = free_port()
        env = {**os.environ, "TOWNHALL_EDGE_CAPACITY": str(capacity),
               "TOWNHALL_EDGE_JOIN_RATE": "5000"}
        if interval_ms != 100:  # the edge's finest delivery interval (older versions: 100)
            env["TOWNHALL_EDGE_INTERVAL_MS"] = str(interval_ms)
        if src:  # another version of townhall (e.g. `git archive <commit> src`) to compare
            env["PYTHONPATH"] = src
        self.log = open(workdir / f"edge-{self.port}.log", "wb")  # kept open for the child
        self.proc = subprocess.Popen(
            [*_pinned(cpu), sys.executable, "-m", "townhall", "serve", "--roles", "edge",
             "--nats", nats_url, "--port", str(self.port), "--data", str(workdir / "data"),
             "--log-level", "warning"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")

    def deliveries(self) -> dict[str, float]:
        """Chunks handed to listeners so far, by path (direct / queued), from /metrics."""
        totals = {"direct": 0.0, "queued": 0.0}
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("townhall_edge_chunk_deliveries_total{"):
                for path in totals:
                    if f'path="{path}"' in line:
                        totals[path] += float(line.split()[-1])
        return totals

    def interval(self) -> float | None:
        """The edge's current delivery interval (s; 0.1 unless it is coalescing under load)."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("townhall_edge_delivery_interval_seconds "):
                return float(line.split()[-1])
        return None

    def stop(self) -> None:
        """Terminate (kill after 10 s)."""
        stop_process(self.proc)
        self.log.close()


async def live_space(bus: Bus, space: str) -> None:
    """The edge alone has no api: the live snapshot goes straight into KV."""
    snap = Space(id=space, title="fan-out bench", description="", state="live", version=1,
                 private=False, host=Person("bench", "Bench"), created_at=time.time())
    await bus.kv_put(subjects.SPACES_BUCKET, space, encode(snap))


class Source:
    """Publishes the tone every 100 ms to NATS and, when connected, to an Icecast mount as
    one Ogg page per ``page_ms`` (100 ms: a page per chunk; 1000: ten chunks' packets per
    page, as ffmpeg's Ogg muxer pages by default)."""

    def __init__(self, bus: Bus, space: str, page_ms: int = 100) -> None:
        self.bus = bus
        self.space = space
        self.chunks_per_page = max(1, round(page_ms / (CHUNK_S * 1000)))
        self.held: list[bytes] = []  # packets for the next Icecast page
        self.pages = 0
        self.packets = tone_packets()
        self.ogg = OggOpusStream()
        self.icecast: asyncio.StreamWriter | None = None
        self.seq = 1
        self.published = 0

    async def to_icecast(self, port: int) -> None:
        """Open the source connection (HTTP PUT, as ffmpeg/ices do) and send the headers."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        auth = base64.b64encode(f"source:{SOURCE_PASSWORD}".encode()).decode()
        writer.write((f"PUT {MOUNT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Basic {auth}\r\nContent-Type: audio/ogg\r\n"
                      "Ice-Public: 0\r\nExpect: 100-continue\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b" 100" not in head[:16] and b" 200" not in head[:16]:
            raise RuntimeError(f"icecast refused the source: {head[:80]!r}")
        writer.write(self.ogg.headers)
        self.icecast = writer

    async def run(self) -> None:
        """Until cancelled, on a steady 100 ms clock."""
        start = time.monotonic()
        n = len(self.packets)
        while True:
            first = (self.seq - 1) * PACKETS_PER_CHUNK
            packets = tuple(self.packets[(first + i) % n] for i in range(PACKETS_PER_CHUNK))
            chunk = Chunk(seq=self.seq, pts=first * FRAME_SAMPLES,
                          sent_us=int(time.time() * 1e6), packets=packets)
            await self.bus.publish(subjects.media(self.space), chunk.encode())
            if self.icecast is not None:
                self.held += packets
                if self.seq % self.chunks_per_page == 0:
                    pts = (first + PACKETS_PER_CHUNK - len(self.held)) * FRAME_SAMPLES
                    self.pages += 1
                    self.icecast.write(self.ogg.chunk_page(Chunk(
                        seq=self.pages, pts=pts, sent_us=chunk.sent_us,
                        packets=tuple(self.held))))
                    self.held = []
            self.seq += 1
            self.published += 1
            await asyncio.sleep(max(0.0, start + self.seq * CHUNK_S - time.monotonic()))
