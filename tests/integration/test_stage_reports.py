"""The stage's RTCP receiver reports say what a speaker's uplink lost, even when NACK resends
repair it: `townhall speak`'s own source track and NACK offer (aiortc) against a real stage
SpeakerSession in this process, 15 % of the speaker's RTP dropped (seeded, resends too).
Counting resends as received, as aiortc does, the reports said ~2 % (the resends' loss)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.waiting import until_async
from townhall.cli.speak import LossPattern, SourceTrack, lossy_uplink, offer_nack, tone
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
