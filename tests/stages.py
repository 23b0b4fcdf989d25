"""Helpers for the tests that watch a stage: find `townhall serve`'s stage child, start a
spare stage or a `townhall speak` tone, and hear the tone in the program."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import Served
from tests.waiting import until_async
from townhall.bus.credentials import USERS_FILE
from townhall.media.chunk import Chunk
from townhall.media.opus import OpusDecoder


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


def spawn(argv: list[str], log: Path | None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child whose output goes to ``log`` (or nowhere); ``env`` adds to ours."""
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env={**os.environ, **env} if env is not None else None)


def speak(served: Served | str, space: str, token: str, log: Path | None = None, *,
          hz: int = 440, seconds: float = 90, extra: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`townhall speak --tone hz` on ``space`` for ``seconds``, at ``served`` (or a URL);
    its output goes to ``log`` (or nowhere)."""
    url = served if isinstance(served, str) else served.url
    return spawn([sys.executable, "-m", "townhall", "speak", "--url", url, "--space", space,
                  "--token", token, "--tone", str(hz), "--seconds", str(seconds), *extra],
                 log, env)


def spare_stage(served: Served, nats: str, data: Path, log: Path) -> subprocess.Popen[bytes]:
    """A second stage process on ``served``'s NATS, ready to take a Space over."""
    return spawn([sys.executable, "-m", "townhall", "serve", "--roles", "stage", "--nats", nats,
                  "--nats-auth-file", str(served.data / USERS_FILE), "--data", str(data)], log)


async def stage_nodes(served: Served) -> int:
    """How many stage processes the api hears heartbeats from (its /metrics)."""
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return len(set(re.findall(r'^townhall_stage_spaces\{node="([^"]+)"\}', text, re.M)))


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
    """Until the last 8 chunks heard, all after seq ``after``, carry the tone."""

    def toned() -> bool:
        recent = [c for c in heard[-8:] if c.seq > after]
        return len(recent) == 8 and tone_db(recent, hz) > 30

    await until_async(toned, bound_s, f"a {hz} Hz tone in the program after seq {after}",
                      every_s=0.1)


def live_space_with(served: Served, *names: str) -> tuple[str, list[tuple[str, str]]]:
    """A live Space hosted by the first of ``names``, the others on stage with them;
    its id and everyone's (token, identity)."""
    people = [served.guest(name) for name in names]
    host = people[0][0]
    space = served.live_space(host)
    with served.client(host) as c:
        for token, ident in people[1:]:
            httpx.post(f"{served.url}/api/v1/spaces/{space}/actions",
                       json={"action": "request"}, timeout=10,
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            c.post(f"/api/v1/spaces/{space}/actions",
                   json={"action": "approve", "identity": ident}).raise_for_status()
    return space, people
