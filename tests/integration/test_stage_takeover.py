"""A stage dies mid-Space: another stage takes the lease, continues the chunk sequence
with no hole, and `townhall speak` reconnects to it on its own."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import Served, start_townhall
from tests.stages import spare_stage, speak, stage_child, stage_nodes, wait_for_tone
from tests.waiting import until_async
from townhall.client.listener import ResilientListener
from townhall.media.chunk import Chunk
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(240)


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
