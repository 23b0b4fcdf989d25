"""The stage owning a recorded Space is killed mid-recording: the recording (kept from the
chunks on NATS, not from the stage) has every chunk the listeners had, and no gap longer
than the silence the failover itself put in the program."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Served
from tests.stages import spare_stage, speak, stage_child, stage_nodes, wait_for_tone
from tests.waiting import until_async
from townhall.client.listener import ResilientListener
from townhall.media.chunk import Chunk
from townhall.media.opus import OpusDecoder
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(300)
BLOCK = 4800  # 100 ms


def longest_quiet(levels: list[float], threshold: float = 1000.0) -> int:
    """The longest run of quiet 100 ms blocks after the first loud one."""
    start = next((i for i, v in enumerate(levels) if v > threshold), len(levels))
    last_loud = max((i for i, v in enumerate(levels) if v > threshold), default=start)
    best = run = 0
    for v in levels[start:last_loud + 1]:
        run = run + 1 if v <= threshold else 0
        best = max(best, run)
    return best


def chunk_levels(chunks: list[Chunk]) -> list[float]:
    decoder = OpusDecoder()
    out = []
    for c in chunks:
        pcm = np.concatenate([decoder.decode(p) for p in c.packets]).astype(np.float64)
        out.append(float(np.sqrt(np.mean(pcm ** 2))))
    return out


def decode(data: bytes, path: Path) -> np.ndarray:
    path.write_bytes(data)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64)


async def test_recording_survives_a_killed_stage(tmp_path: Path, townhall: Served) -> None:
    served = townhall
    spare: subprocess.Popen[bytes] | None = None
    speaker: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    try:
        first_stage, nats = stage_child(served.proc.pid)
        host = served.session("Ada")
        space = served.live_space(host, "Failover", record=True)
        speaker = speak(served, space, host, tmp_path / "speak.log")
        heard: list[Chunk] = []
        listener = ResilientListener(served.url, space, on_chunk=heard.append)
        task = asyncio.create_task(listener.run(stop))
        await wait_for_tone(heard, -1, 440, 40)
        spare = spare_stage(served, nats, tmp_path / "spare", tmp_path / "spare.log")

        # the spare is up (its heartbeat reaches the api) and so has found the lease taken
        async def both_up() -> bool:
            return await stage_nodes(served) >= 2

        await until_async(both_up, 30, "the spare stage's heartbeat")
        os.kill(first_stage, signal.SIGKILL)
        killed_at = heard[-1].seq
        await wait_for_tone(heard, killed_at + 20, 440, 90)
        async with httpx.AsyncClient(base_url=served.url, timeout=10,
                                     headers={"Authorization": f"Bearer {host}"}) as http:
            (await http.post(f"/api/v1/spaces/{space}/end")).raise_for_status()
            stop.set()
            await asyncio.wait_for(task, 15)

            async def recording() -> dict[str, str]:
                rec = (await http.get(f"/api/v1/spaces/{space}")).json()["recording"]
                return rec if isinstance(rec, dict) else {}

            rec = await until_async(recording, 60, "the recording is ready", every_s=0.1)
            data = (await http.get(rec["url"])).content
        pcm = decode(data, tmp_path / "replay.opus")
        replay_levels = [float(np.sqrt(np.mean(pcm[i:i + BLOCK] ** 2)))
                         for i in range(0, len(pcm) - BLOCK, BLOCK)]
        heard_gap = longest_quiet(chunk_levels(heard))
        replay_gap = longest_quiet(replay_levels)
        # Every chunk the listener had is in the recording: it lasts at least as long.
        span = heard[-1].pts + heard[-1].duration_samples - heard[0].pts
        assert len(pcm) >= span - BLOCK, (len(pcm), span)
        assert replay_gap <= heard_gap + 3, (replay_gap, heard_gap)  # within 300 ms
        assert sum(v > 1000 for v in replay_levels) >= sum(
            v > 1000 for v in chunk_levels(heard)) - 3
    finally:
        stop.set()
        for proc in (speaker, spare):
            if proc is not None:
                stop_process(proc, 15)
