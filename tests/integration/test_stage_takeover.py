"""A stage dies mid-Space: another stage takes the lease, continues the chunk sequence
with no hole, and `townhall speak` reconnects to it on its own."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Served, start_townhall
from tests.waiting import until_async
from townhall.bus.credentials import USERS_FILE
from townhall.client.listener import ResilientListener
from townhall.media.chunk import Chunk
from townhall.media.opus import OpusDecoder
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(240)


def stage_child(parent: int) -> tuple[int, str]:
    """The pid of `townhall serve`'s stage process and the NATS URL it was given."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"stage" in argv and b"--nats" in argv:
            return int(entry), argv[argv.index(b"--nats") + 1].decode()
    raise AssertionError("no stage child process")


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def tone_db(chunks: list[Chunk], hz: float) -> float:
    """How far the tone stands above a quiet band, in dB, over these chunks."""
    decoder = OpusDecoder()
    pcm = np.concatenate([decoder.decode(p) for c in chunks for p in c.packets])
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / 48_000)

    def band(f: float) -> float:
        return float(spectrum[np.abs(freqs - f) < 15].max()) + 1e-9

    return float(20 * np.log10(band(hz) / band(2500)))


async def wait_for_tone(heard: list[Chunk], after: int, hz: float, bound_s: float) -> None:
    for _ in range(int(bound_s * 10)):
        await asyncio.sleep(0.1)
        recent = [c for c in heard[-8:] if c.seq > after]
        if len(recent) == 8 and tone_db(recent, hz) > 30:
            return
    raise AssertionError(f"no {hz} Hz tone in the program after seq {after}")


async def stage_nodes(served: Served) -> int:
    """How many stage processes the api hears heartbeats from (its /metrics)."""
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return len(set(re.findall(r'^townhall_stage_spaces\{node="([^"]+)"\}', text, re.M)))


async def test_killed_stage_is_replaced_without_a_sequence_hole(tmp_path: Path) -> None:
    served: Served = start_townhall(tmp_path / "data")
    spare: subprocess.Popen[bytes] | None = None
    speaker: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    try:
        first_stage, nats = stage_child(served.proc.pid)
        host = served.session("Ada")
        with served.client(host) as c:
            space = c.post("/api/v1/spaces", json={"title": "Takeover"}).json()["id"]
            c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        speaker = spawn(
            [sys.executable, "-m", "townhall", "speak", "--url", served.url, "--space", space,
             "--token", host, "--tone", "440", "--seconds", "90"], tmp_path / "speak.log")
        heard: list[Chunk] = []
        listener = ResilientListener(served.url, space, on_chunk=heard.append)
        task = asyncio.create_task(listener.run(stop))
        await wait_for_tone(heard, -1, 440, 40)
        spare = spawn(
            [sys.executable, "-m", "townhall", "serve", "--roles", "stage", "--nats", nats,
             "--nats-auth-file", str(served.data / USERS_FILE),
             "--data", str(tmp_path / "spare")], tmp_path / "spare.log")
        # the spare is up (its heartbeat reaches the api) and so has found the lease taken
        async def both_up() -> bool:
            return await stage_nodes(served) >= 2

        await until_async(both_up, 30, "the spare stage's heartbeat")
        os.kill(first_stage, signal.SIGKILL)
        killed_at = heard[-1].seq
        await wait_for_tone(heard, killed_at + 10, 440, 90)
        stop.set()
        await asyncio.wait_for(task, 15)
        seqs = [c.seq for c in heard]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "hole or repeat in seq"
        assert listener.stats.missing == 0
        assert seqs[-1] > killed_at + 10
        pts = [c.pts for c in heard]
        assert all(b - a == 4800 for a, b in itertools.pairwise(pts))
        assert b"reconnecting" in (tmp_path / "speak.log").read_bytes()
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            snap = (await http.get(f"/api/v1/spaces/{space}")).json()
        assert snap["state"] == "live"
    finally:
        stop.set()
        for proc in (speaker, spare):
            if proc is not None:
                stop_process(proc, 15)
        served.stop()
