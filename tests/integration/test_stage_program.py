"""What the stage puts on the bus for one Space, read straight from NATS: chunks of
silence while nobody talks, levels at most 4 a second while someone does, one unbroken
stream (sequence and pts) across silence, speech and silence again, and nothing more
once the Space ends (its lease released)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Served
from tests.stages import speak, stage_child
from tests.waiting import until_async
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Message
from townhall.bus.messages import Levels, StageHeartbeat, decode_heartbeat, decode_levels
from townhall.media.chunk import Chunk
from townhall.media.opus import OpusDecoder
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def served(townhall_shared: Served) -> Served:
    return townhall_shared


async def test_silence_levels_and_end(served: Served, tmp_path: Path) -> None:
    _, nats = stage_child(served.proc.pid)
    host, me = served.guest("Ada")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Program"}).json()["id"]
    chunks: list[Chunk] = []
    levels: list[tuple[float, Levels]] = []
    beats: list[StageHeartbeat] = []

    async def on_media(msg: Message) -> None:
        chunks.append(Chunk.decode(msg.data))

    async def on_levels(msg: Message) -> None:
        levels.append((time.monotonic(), decode_levels(msg.data)))

    async def on_beat(msg: Message) -> None:
        beats.append(decode_heartbeat(msg.data))

    bus = await NatsBus.connect([nats], setup=False, auth=served.nats_auth())
    speaker = None
    try:
        await bus.subscribe(subjects.media(space), on_media)
        await bus.subscribe(subjects.levels(space), on_levels)
        await bus.subscribe(subjects.STAGES, on_beat)
        await asyncio.sleep(1)
        assert chunks == []  # scheduled Spaces have no program
        with served.client(host) as c:
            c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        await until_async(lambda: len(chunks) >= 20, 30, "20 chunks of silence")
        seqs = [c.seq for c in chunks]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(len(c.packets) == 5 for c in chunks)
        decoder = OpusDecoder()
        quiet = np.concatenate([decoder.decode(p) for c in chunks for p in c.packets])
        assert int(np.abs(quiet.astype(np.int32)).max()) < 100
        assert levels == []  # nobody on a WHIP session: nothing to report

        speaker = speak(served, space, host, tmp_path / "speak.log", seconds=60)

        def speaking() -> bool:
            return any(me in lv.speaking for _, lv in levels)

        await until_async(speaking, 40, "the host reported as speaking")
        since = time.monotonic()
        await until_async(lambda: levels[-1][0] >= since + 3, 20, "3 s more of levels")
        recent = [at for at, _ in levels if at > levels[-1][0] - 3]
        assert len(recent) <= 3 * 4 + 1  # at most 4 level messages a second
        assert all(lv.space == space for _, lv in levels)
        # Each speaker's uplink, graded by the stage (loopback: nothing lost).
        link = levels[-1][1].links[me]
        assert link.quality == "good" and link.loss_pct == 0.0, link

        # The speaker leaves: the program goes back to silence on the same clock.
        speaking_until = len(chunks)
        stop_process(speaker, 15)
        speaker = None
        await until_async(lambda: len(chunks) >= speaking_until + 25, 15, "chunks after")
        seqs = [c.seq for c in chunks]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # silence, speech, silence
        assert [c.pts for c in chunks] == [chunks[0].pts + 4800 * i for i in range(len(chunks))]
        program = OpusDecoder()
        pcm = [program.decode(p) for c in chunks for p in c.packets]
        loud = [i for i, f in enumerate(pcm) if np.abs(f.astype(np.int32)).max() > 3000]
        assert loud and loud[-1] < len(pcm) - 50  # the tone, then at least 1 s of quiet
        assert int(np.abs(np.concatenate(pcm[-25:]).astype(np.int32)).max()) < 100
        # Silence was repeated, not mixed and encoded (the silence gate's counter).
        await until_async(lambda: beats and beats[-1].silent_ticks > 0, 5,
                          "silent ticks counted in the stage's heartbeat")

        with served.client(host) as c:
            c.post(f"/api/v1/spaces/{space}/end").raise_for_status()

        async def released() -> bool:
            return await bus.kv_get(subjects.LEASES_BUCKET, space) is None

        await until_async(released, 10, "the stage releasing the Space")
        n = len(chunks)
        await asyncio.sleep(2)  # an observation window: nothing may arrive in it
        assert len(chunks) == n, "chunks kept coming after the Space ended"
    finally:
        if speaker is not None:
            stop_process(speaker, 15)
        await bus.close()
