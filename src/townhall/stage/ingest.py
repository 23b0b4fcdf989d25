"""One speaker's WebRTC session (aiortc): their RTP Opus packets into a Playout (our jitter
buffer + libopus with FEC/PLC, pulled by the mixer clock), and their mix-minus return feed
out as a track of its own.

Packets are taken off aiortc's receiver before its own jitter buffer and decoder thread:
aiortc drops what arrives late and neither conceals loss nor uses FEC, and a decoder
thread per speaker would hand frames over at the network's pace rather than the mixer's.
A speaker that offers ``a=rtcp-fb:<pt> nack`` (``townhall speak``) is asked by RTCP NACK
for the packets it lost, and resends them from its history (townhall.media.nack).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import time
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from townhall.ice import IceConfig, announce
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.linkquality import LinkGauge, LinkReport
from townhall.media.nack import NackList
from townhall.media.opus import OpusEncoder
from townhall.media.playout import Playout
from townhall.media.reception import ReceptionStats
from townhall.media.silence import SILENT_FRAME, Plan, SilenceGate
from townhall.sessionid import new_session_id
from townhall.stage.rtc import bind_in_range, rtc_configuration

log = logging.getLogger(__name__)
RETURN_BITRATE = 32_000
RTP_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class ReturnTrack(MediaStreamTrack):
    """The mix-minus for one speaker, paced by the stage's mixer clock, encoded here.

    aiortc sends ready-made packets as they are (as `townhall speak` uses it): handing it
    frames instead cost a stereo 96 kbit/s encode behind a resampler and a thread-pool
    hop per frame per speaker, the stage's largest per-speaker cost. The return is mono
    Opus at ``RETURN_BITRATE`` (the program's rate), and a speaker who hears silence (alone
    on stage, or a silent Space: the mixer hands over the shared silent frame) costs no
    encode at all: as for the program, the encoder's settled silence packet is repeated
    (media.silence), so the speaker's decoder sees the same stream either way.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=25)
        self._pts = 0
        self._encoder = OpusEncoder(RETURN_BITRATE)
        self._gate = SilenceGate(hangover=1)

    def feed(self, pcm: np.ndarray) -> None:
        """Queue a speaker's mix-minus frame; a full queue drops its oldest."""
        if self._queue.full():  # the sender fell behind: drop the oldest, stay current
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(pcm)

    async def recv(self) -> av.Packet:
        """The next Opus packet of the return feed (silence repeated, not re-encoded)."""
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._queue.get()
        plan = self._gate.plan(pcm is not SILENT_FRAME)
        if plan is Plan.REPEAT and self._gate.packet is not None:
            data = self._gate.packet
        else:
            data = self._encoder.encode(pcm)
            if plan is Plan.SILENCE:
                self._gate.encoded(data)
        packet = av.Packet(data)
        packet.pts = self._pts  # aiortc turns pts/time_base into the RTP timestamp
        packet.time_base = RTP_TIME_BASE
        self._pts += FRAME_SAMPLES
        return packet


def to_mono(frame: av.AudioFrame) -> np.ndarray:
    """aiortc hands over 48 kHz s16 (usually stereo, interleaved): fold to mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if data.dtype != np.int16:
        data = np.clip(data * 32767.0, -32768, 32767).astype(np.int16)
    if frame.format.is_planar:
        mono = data.astype(np.int32).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return mono.astype(np.int16)


def with_inband_fec(sdp: str) -> str:
    """The SDP with ``useinbandfec=1`` on every Opus payload type.

    In an answer it asks the speaker to send Opus in-band FEC (RFC 7587: the receiver's
    fmtp tells the sender what it can use); aiortc's answer carries no Opus fmtp at all,
    and Chromium only turns FEC on when the answer asks for it.
    """
    lines = sdp.split("\r\n")
    out: list[str] = []
    opus = {m.group(1) for line in lines
            if (m := re.match(r"a=rtpmap:(\d+) opus/48000", line, re.I))}
    has_fmtp = set()
    for line in lines:
        m = re.match(r"a=fmtp:(\d+) (.*)", line)
        if m and m.group(1) in opus:
            has_fmtp.add(m.group(1))
            params = [p for p in m.group(2).split(";") if p and
                      not p.strip().lower().startswith("useinbandfec=")]
            line = f"a=fmtp:{m.group(1)} {';'.join([*params, 'useinbandfec=1'])}"
        out.append(line)
    result: list[str] = []
    for line in out:
        result.append(line)
        m = re.match(r"a=rtpmap:(\d+) opus/48000", line, re.I)
        if m and m.group(1) not in has_fmtp:
            result.append(f"a=fmtp:{m.group(1)} minptime=10;useinbandfec=1")
    return "\r\n".join(result)


SPEAKER_MAX_BITRATE = 64_000  # what a speaker's Opus may spend (the program stays at 32k)


def with_max_bitrate(sdp: str, bps: int = SPEAKER_MAX_BITRATE) -> str:
    """The SDP with ``maxaveragebitrate`` on every Opus fmtp line that has none.

    In an answer it tells the speaker how much it may send (RFC 7587); libwebrtc takes it
    as its Opus target, 32 kbit/s otherwise. The speaker's encode is the first of two
    (the program is encoded again at 32 kbit/s): at 64 kbit/s the tandem scores PESQ-WB
    3.85 instead of 3.46 on our test speech (bench/README.md, Quality).
    """
    opus = set(re.findall(r"a=rtpmap:(\d+) opus/48000", sdp, re.I))
    out: list[str] = []
    for line in sdp.split("\r\n"):
        m = re.match(r"a=fmtp:(\d+) (.*)", line)
        if m and m.group(1) in opus and "maxaveragebitrate=" not in m.group(2).lower():
            line = f"{line};maxaveragebitrate={bps}"
        out.append(line)
    return "\r\n".join(out)


def nack_types(sdp: str) -> set[int]:
    """The payload types that carry ``a=rtcp-fb:<pt> nack`` (generic NACK, not ``nack pli``)."""
    return {int(pt) for pt in re.findall(r"^a=rtcp-fb:(\d+) nack[ \t]*\r?$", sdp, re.M)}


def with_nack(sdp: str, types: set[int]) -> str:
    """The SDP with ``a=rtcp-fb:<pt> nack`` under the rtpmap of each of ``types`` (once):
    aiortc's answer drops the audio feedback the offer carried."""
    have = nack_types(sdp)
    out: list[str] = []
    for line in sdp.split("\r\n"):
        out.append(line)
        m = re.match(r"a=rtpmap:(\d+) ", line)
        if m and int(m.group(1)) in types - have:
            out.append(f"a=rtcp-fb:{m.group(1)} nack")
    return "\r\n".join(out)


class SpeakerSession:
    """A speaker's peer connection on this stage."""

    def __init__(self, identity: str, name: str, ice: IceConfig | None = None) -> None:
        self.id = new_session_id()
        self.identity = identity
        self.name = name
        self.playout = Playout()
        self.returns = ReturnTrack()
        self.ice = ice or IceConfig()
        self.pc = RTCPeerConnection(rtc_configuration(
            self.ice.servers(f"stage-{self.id}", time.time())))
        self.packets_in = 0
        self.gauge = LinkGauge()
        self._opus_types: set[int] = set()
        self._rtcp_stats: dict[int, Any] | None = None
        self._receiver: Any = None
        self.returns_sender: Any = None
        self.closed = asyncio.Event()

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, offer_sdp: str) -> str:
        """Accept the WHIP offer; returns the SDP answer (ICE gathered, no trickle)."""
        self._opus_types = {int(pt) for pt in
                            re.findall(r"a=rtpmap:(\d+) opus/48000", offer_sdp, re.I)}
        resends = self._opus_types & nack_types(offer_sdp)
        if resends:
            self.playout.nack = NackList()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if self.ice.rtc_ports is not None:
            bind_in_range(self.pc, self.ice.rtc_ports)
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                # An encoder's video (OBS offers it): declined, never received or decoded.
                transceiver.direction = "inactive"
            if transceiver.kind == "audio":
                transceiver.sender.replaceTrack(self.returns)
                transceiver.direction = "sendrecv"
                # The DTLS transport looks this method up on the instance for each packet.
                transceiver.receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]
                # aiortc's receiver reports come from statistics its own handler keeps;
                # we keep them instead, or the speaker never hears of loss (and Chromium
                # only adds Opus FEC once receiver reports show some), and count resends
                # as lost, so the reports say what the link lost (media.reception).
                self._rtcp_stats = getattr(transceiver.receiver,
                                           "_RTCRtpReceiver__remote_streams", None)
                self._receiver = transceiver.receiver
                self.returns_sender = transceiver.sender
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        # aiortc's own description has no Opus fmtp; the speaker reads ours from the text.
        sdp = with_nack(with_max_bitrate(with_inband_fec(str(self.pc.localDescription.sdp))),
                        resends)
        return sdp if self.ice.public_ip is None else announce(sdp, self.ice.public_ip)

    async def _on_rtp(self, packet: Any, arrival_time_ms: int) -> None:
        """An RTP packet from this speaker (telephone-event and other types ignored)."""
        if packet.payload_type in self._opus_types:
            now = arrival_time_ms / 1000
            # The round trip aiortc measures from the speaker's reports on our return feed.
            rtt = getattr(self.returns_sender, "_RTCRtpSender__rtt", None)
            if self._rtcp_stats is not None:
                stats = self._rtcp_stats.get(packet.ssrc)
                if stats is None:
                    stats = self._rtcp_stats[packet.ssrc] = ReceptionStats(SAMPLE_RATE)
                nack = self.playout.nack
                stats.add(packet.sequence_number, packet.timestamp, now,
                          None if nack is None else nack.asked_at(packet.sequence_number),
                          rtt)
            self.packets_in += 1
            lost = self.playout.push(packet.sequence_number, packet.payload, now, rtt)
            if lost and self._receiver is not None:
                # aiortc's own receiver sends NACKs for video only; the call is the same.
                await self._receiver._send_rtcp_nack(packet.ssrc, lost)

    def link(self, now: float) -> LinkReport:
        """This speaker's uplink quality (loss and jitter over the last seconds)."""
        jb = self.playout.jitter
        # The buffer counts lost 20 ms slots: a lost 60 ms packet is three of them.
        lost = jb.lost // jb.packet_frames + jb.late
        return self.gauge.report(self.playout.packets, lost, jb.jitter_s, now)

    def pull(self) -> np.ndarray | None:
        """This mixer tick's frame from the speaker, or None when there is nothing."""
        return None if self.closed.is_set() else self.playout.pull()

    async def close(self) -> None:
        """Close once: stop the return feed and the peer connection (bounded)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.returns.stop()
        # aiortc's close can hang on a peer that vanished; never let it hold up a stop.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 2)
