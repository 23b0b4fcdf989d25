"""`townhall speak`'s own source track and NACK offer (aiortc) against a real stage
SpeakerSession in this process. The stage's RTCP receiver reports say what the uplink
lost, even when NACK resends repair it (15 % of the speaker's RTP dropped, seeded, resends
too; counting resends as received, as aiortc does, they said ~2 %); and 60 ms packets (the
speaker's lowest rates) play through the stage's playout without a gap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.waiting import until_async
from townhall.cli.speak import LossPattern, SourceTrack, lossy_uplink, offer_nack, tone
from townhall.media.opus import packet_samples
from townhall.stage.ingest import SpeakerSession

pytestmark = pytest.mark.timeout(60)


async def remote_inbound(pc: RTCPeerConnection) -> Any:
    """The speaker's view of the stage's latest receiver report (None before the first)."""
    for transceiver in pc.getTransceivers():
        for stats in (await transceiver.sender.getStats()).values():
            if getattr(stats, "type", "") == "remote-inbound-rtp":
                return stats
    return None


async def test_receiver_reports_count_repaired_loss() -> None:
    session = SpeakerSession("speaker", "Speaker")
    speaker = RTCPeerConnection()
    pattern = LossPattern(0.15, seed=7)

    async def mixer_clock() -> None:
        while True:
            session.pull()
            await asyncio.sleep(0.020)

    clock = asyncio.ensure_future(mixer_clock())
    try:
        speaker.addTransceiver(SourceTrack(tone(440, 2.0)), direction="sendrecv")
        await speaker.setLocalDescription(await speaker.createOffer())
        answer = await session.answer(offer_nack(speaker.localDescription.sdp))
        await speaker.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        lossy_uplink(speaker, pattern)
        playout = session.playout

        async def reported() -> bool:
            stats = await remote_inbound(speaker)
            return (stats is not None and pattern.sent > 300 and playout.resent > 10
                    and stats.packetsLost > 0)

        await until_async(reported, 30, "300 packets sent, resends, a report of loss")
        stats = await remote_inbound(speaker)
    finally:
        clock.cancel()
        await speaker.close()
        await session.close()
    assert session.playout.nack is not None  # the speaker offered NACK: it was asked
    # Resends repaired most of it, yet the report counts what the link lost.
    lost_share = stats.packetsLost / max(1, pattern.sent)
    assert 0.08 < lost_share < 0.25, (stats.packetsLost, pattern.sent, pattern.dropped)
    reception = next(iter(session._rtcp_stats.values()))  # type: ignore[union-attr]
    assert reception.resends > 10, reception


async def test_60_ms_packets_play_without_a_gap() -> None:
    session = SpeakerSession("speaker", "Speaker")
    speaker = RTCPeerConnection()
    pulled: list[bool] = []
    sizes: set[int] = set()
    tap = session._on_rtp

    async def on_rtp(packet: Any, arrival_time_ms: int) -> None:
        sizes.add(packet_samples(packet.payload))
        await tap(packet, arrival_time_ms)

    async def mixer_clock() -> None:
        # Against due times, as the stage's ticker: a clock slower than the sender's
        # would make the buffer skip (drift), which is not what this is about.
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            pulled.append(session.pull() is not None)
            due += 0.020
            await asyncio.sleep(max(0.0, due - loop.time()))

    clock = asyncio.ensure_future(mixer_clock())
    try:
        speaker.addTransceiver(SourceTrack(tone(440, 2.0), bitrate=12_000),
                               direction="sendrecv")
        await speaker.setLocalDescription(await speaker.createOffer())
        answer = await session.answer(speaker.localDescription.sdp)
        for transceiver in session.pc.getTransceivers():
            transceiver.receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign]
        await speaker.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await until_async(lambda: session.playout.packets >= 60, 30, "60 packets of 60 ms")
    finally:
        clock.cancel()
        await speaker.close()
        await session.close()
    assert sizes == {2880}, sizes
    playout = session.playout
    # Three ticks per packet; a tick that had nothing would show as concealed or lost.
    assert (playout.concealed, playout.jitter.lost, playout.jitter.skipped) == (0, 0, 0)
    first = pulled.index(True)
    assert pulled[first:].count(True) >= 3 * (playout.packets - 3)
