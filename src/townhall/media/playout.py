"""One speaker's playout, with no I/O: RTP Opus packets in, one 20 ms PCM frame per tick out.

The JitterBuffer orders packets and decides, once per mixer tick, which slot plays; this
decodes that slot with libopus: a packet normally, a lost one from the next packet's
in-band FEC when it is already waiting, otherwise by Opus PLC. Packets longer than 20 ms
are split across ticks: the jitter buffer's slots are 20 ms of the sender's time, so a
40/60 ms packet (a sender at its lowest bitrate, where the per-packet overhead dominates)
takes the slot of its first 20 ms and the ones after it are skipped once it played.
With a NackList (senders that resend on RTCP NACK), ``push`` also says which lost packets
to ask for again, so most come back before their slot plays.

Packets that cannot carry audio (DTX and digital-silence frames, ``opus.silent_packet``)
are not decoded at all: the tick gets nothing, as from a quiet speaker, and the decoder is
reset before the next packet it decodes, so it starts from silence as the sender's encoder
did rather than from the speech before the pause (whose energies it would predict from).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES
from townhall.media.jitterbuffer import JitterBuffer, unwrap_seq
from townhall.media.nack import NackList
from townhall.media.opus import OpusPacketDecoder, packet_samples, silent_packet

_ZEROS = np.zeros(OpusPacketDecoder.MAX_SAMPLES, np.int16)
_ZEROS.flags.writeable = False


@dataclass
class Playout:
    """Jitter buffer + Opus decoder for one speaker; ``pull`` once per mixer tick."""

    # 40 ms floor: a packet one slot late or early is the commonest network jitter.
    jitter: JitterBuffer = field(default_factory=lambda: JitterBuffer(min_frames=2))
    decoder: OpusPacketDecoder = field(default_factory=OpusPacketDecoder)
    nack: NackList | None = None
    packets: int = 0
    recovered: int = 0   # lost frames rebuilt from FEC
    concealed: int = 0   # lost frames filled by PLC
    corrupt: int = 0     # packets libopus refused
    resent: int = 0      # missing packets that came back after a NACK in time to play
    silent: int = 0      # packets not decoded: they carry no audio (DTX, digital silence)
    _stale: bool = False  # silent packets skipped since the decoder last ran
    _carry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    _newest: tuple[int, int, int] | None = None  # (extended seq, slot, frames) of the newest

    def _slot(self, seq16: int, frames: int) -> int:
        """The jitter-buffer slot (20 ms units) of the packet with RTP ``seq16`` that holds
        ``frames`` 20 ms frames: after the newest, its slot plus its length, and this
        packet's length for each packet missing in between. With 20 ms packets only, the
        slot is the sequence number."""
        if self._newest is None:
            self._newest = (seq16, seq16, frames)
            return seq16
        newest, slot, length = self._newest
        seq = unwrap_seq(seq16, newest)
        if seq <= newest:  # reordered or resent: as long as this one, each
            return slot - (newest - seq) * frames
        slot += length + (seq - newest - 1) * frames
        self._newest = (seq, slot, frames)
        return slot

    def push(self, seq: int, payload: bytes, now: float,
             rtt_s: float | None = None) -> list[int]:
        """An RTP packet's sequence number and Opus payload, arriving at ``now``; returns
        the sequence numbers to ask the sender for again (none without a NackList);
        ``rtt_s``: the round trip to the sender, when known."""
        asked_for = self.nack is not None and self.nack.arrived(seq)
        if payload:
            self.packets += 1
            frames = max(1, packet_samples(payload) // FRAME_SAMPLES)
            self.jitter.packet_frames = frames
            if self.jitter.push(self._slot(seq, frames) & 0xFFFF, payload, now) and asked_for:
                self.resent += 1
        return [] if self.nack is None else self.nack.due(now, rtt_s)

    def pull(self) -> np.ndarray | None:
        """This tick's frame, or None while buffering or when the speaker sends nothing
        (or nothing audible: a silent packet)."""
        if self._carry.size < FRAME_SAMPLES:
            pcm = self._decode_next()
            if pcm is None:
                return None
            if isinstance(pcm, int):  # a silent packet of that many samples
                if self._carry.size == 0:
                    if pcm > FRAME_SAMPLES:
                        self._carry = _ZEROS[:pcm - FRAME_SAMPLES]
                    return None
                pcm = _ZEROS[:pcm]
            if self._carry.size == 0 and pcm.size == FRAME_SAMPLES:
                return pcm  # the common case: one 20 ms packet, no copy
            self._carry = np.concatenate([self._carry, pcm])
        if self._carry.size < FRAME_SAMPLES:  # a 10 ms packet: pad, never stall the clock
            self._carry = np.concatenate(
                [self._carry, np.zeros(FRAME_SAMPLES - self._carry.size, np.int16)])
        frame, self._carry = self._carry[:FRAME_SAMPLES], self._carry[FRAME_SAMPLES:]
        return frame

    def _decode_next(self) -> np.ndarray | int | None:
        """The next slot decoded; for a silent packet only its length in samples."""
        slot = self.jitter.pop()
        if slot is None:
            return None
        if slot.payload is not None and slot.payload:
            longer = packet_samples(slot.payload) // FRAME_SAMPLES - 1
            if longer > 0:
                self.jitter.covered(longer)
        if slot.payload is not None and silent_packet(slot.payload):
            self.silent += 1
            self._stale = True
            return packet_samples(slot.payload) if slot.payload else FRAME_SAMPLES
        if self._stale:
            self.decoder.reset()
            self._stale = False
        try:
            if slot.payload is not None:
                return self.decoder.decode(slot.payload)
            if slot.fec is not None:
                self.recovered += 1
                return self.decoder.recover(slot.fec)
        except ValueError:
            self.corrupt += 1
        self.concealed += 1
        try:
            return self.decoder.conceal()
        except ValueError:
            return np.zeros(FRAME_SAMPLES, np.int16)
