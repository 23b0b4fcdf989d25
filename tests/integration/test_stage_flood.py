"""A speaker who floods (sends audio far faster than real time) is contained: the mix
keeps its own clock, and another speaker's tone stays in the program, uninterrupted."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from pathlib import Path

import av
import httpx
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from tests.conftest import Served
from tests.stages import speak, stage_child, tone_db
from tests.waiting import until_async
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Message
from townhall.cli.speak import tone
from townhall.client import whip
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.procs import stop_process

pytestmark = [pytest.mark.timeout(180), pytest.mark.realtime]


class FloodTrack(MediaStreamTrack):
    """20 ms frames of 660 Hz, as fast as the encoder takes them (many times real time)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pcm = tone(660, 1.0)
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0)
        start = self.pts % (self.pcm.size - FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(self.pcm[start:start + FRAME_SAMPLES].reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.pts += FRAME_SAMPLES
        return frame


async def test_a_flooding_speaker_cannot_speed_up_or_break_the_mix(
        tmp_path: Path, townhall: Served) -> None:
    served = townhall
    speaker = None
    pc = RTCPeerConnection()
    flood = FloodTrack()
    try:
        _, nats = stage_child(served.proc.pid)
        (host, _), (bob, bob_id) = served.guest("Ada"), served.guest("Bob")
        space = served.live_space(host, "Flood")
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
            (await http.post(f"/api/v1/spaces/{space}/actions", json={"action": "request"},
                             headers={"Authorization": f"Bearer {bob}"})).raise_for_status()
            (await http.post(f"/api/v1/spaces/{space}/actions",
                             json={"action": "approve", "identity": bob_id},
                             headers={"Authorization": f"Bearer {host}"})).raise_for_status()
            chunks: list[tuple[float, Chunk]] = []

            async def on_media(msg: Message) -> None:
                chunks.append((time.monotonic(), Chunk.decode(msg.data)))

            bus = await NatsBus.connect([nats], setup=False, auth=served.nats_auth())
            await bus.subscribe(subjects.media(space), on_media)
            speaker = speak(served, space, host, tmp_path / "speak.log", seconds=60)
            pc.addTransceiver(flood, direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            # 503 until the stage process is up and owns the Space
            r = await whip.offer(http, f"/whip/{space}", bob, pc.localDescription.sdp,
                                 pause_s=1)
            assert r.status_code == 201, r.text
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            def flooding() -> bool:  # both connected: the flood reaches the mix
                recent = [c for _, c in chunks[-10:]]
                return (len(recent) == 10 and tone_db(recent, 440) > 30
                        and flood.pts > 48_000 * 30)

            await until_async(flooding, 30, "Ada's tone in the program while Bob floods")
            n = len(chunks)
            # 5 s of program during the flood (chunks are 100 ms)
            await until_async(lambda: len(chunks) >= n + 50, 20, "5 s of program")
            window = chunks[n:]
            sent_flood_s = flood.pts / SAMPLE_RATE
        await bus.close()
        # The clock, not the flood, sets the pace: ~10 chunks a second of stage time.
        span_s = (window[-1][1].sent_us - window[0][1].sent_us) / 1e6
        produced_s = (len(window) - 1) * 0.1
        assert abs(produced_s - span_s) < 1.0, (produced_s, span_s, sent_flood_s)
        seqs = [c.seq for _, c in window]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # Ada's tone stays in the program in every second of the flood.
        for i in range(0, len(window) - 10, 10):
            assert tone_db([c for _, c in window[i:i + 10]], 440) > 30, i
        assert sent_flood_s > 30  # it really was a flood: far more than the wall time
    finally:
        flood.stop()
        with contextlib.suppress(Exception):
            await pc.close()
        if speaker is not None:
            stop_process(speaker, 15)
