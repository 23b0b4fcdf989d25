"""The AAC rendition of a Space, with no I/O: program chunks (Opus) in, AAC-LC frames out.

Apple devices that take no Opus get one AAC-LC rendition, encoded once per Space (by
whoever holds the Space's packager lease) and shared by every node as ``AacBatch``
messages. Frames are stamped on the Space's 48 kHz clock with the time of the audio they
play once decoded: the encoder's delay (ENCODER_DELAY, its priming frame) is taken off, so
an encoder started at Space time ``t0`` stamps its n-th frame ``t0 + (n - 1) * 1024`` and
the frame stamped ``t`` plays the program from ``t``. A segment's decode time is its first
stamp, so the AAC rendition lines up with the Opus one sample for sample, in every
player (no edit list to honour). The first encoder's priming frame would be stamped
before the Space's start: it is dropped (it holds no program; a decoder fades the first
frame in instead).

Wire form of an ``AacBatch`` (big-endian), the payload on ``townhall.<space>.aac``::

    magic  b"THA1"      4 bytes
    seq    u64          batch number, +1 per batch of this Space
    pts    u64          stamp of the first frame (48 kHz, the Space's clock)
    src    u64          sequence number of the last program chunk encoded into it
    n      u16          number of AAC frames (1024 samples each)
    n × (u16 length, frame bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk, pack_frames, unpack_frames
from townhall.media.fmp4 import AAC_FRAME_SAMPLES
from townhall.media.opus import OpusPacketDecoder, mono_encoder, mono_frame
from townhall.problems import BadInput

MAGIC = b"THA1"
_HEAD = struct.Struct(">4sQQQH")
AAC_BITRATE = 64_000
MAX_FILL = 60 * SAMPLE_RATE  # a longer hole in the program starts a new encoder
ENCODER_DELAY = AAC_FRAME_SAMPLES  # FFmpeg's AAC encoder: one priming frame


@dataclass(frozen=True)
class AacBatch:
    """Consecutive AAC frames of the rendition, from the stamp ``pts`` on."""

    seq: int
    pts: int
    src: int
    frames: tuple[bytes, ...]

    @property
    def end_pts(self) -> int:
        """The stamp just after the batch's last frame."""
        return self.pts + AAC_FRAME_SAMPLES * len(self.frames)

    def stamped(self) -> list[tuple[int, bytes]]:
        """Each frame with its stamp on the Space's 48 kHz clock."""
        return [(self.pts + i * AAC_FRAME_SAMPLES, f) for i, f in enumerate(self.frames)]

    def encode(self) -> bytes:
        """The wire form (above)."""
        return pack_frames(_HEAD.pack(MAGIC, self.seq, self.pts, self.src, len(self.frames)),
                           self.frames)

    @classmethod
    def decode(cls, data: bytes) -> AacBatch:
        """A batch from its wire form; BadInput (``bad-chunk``) if it is not one."""
        if len(data) < _HEAD.size:
            raise BadInput("AAC batch too short", slug="bad-chunk")
        magic, seq, pts, src, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise BadInput("not an AAC batch", slug="bad-chunk")
        return cls(seq=seq, pts=pts, src=src,
                   frames=unpack_frames(data, _HEAD.size, n, "AAC batch"))


class AacEncoder:
    """AAC-LC through PyAV (FFmpeg's native encoder): 48 kHz mono int16 in, frames out.
    PyAV cuts the input into the encoder's 1024-sample frames itself."""

    def __init__(self, bitrate: int = AAC_BITRATE) -> None:
        self._ctx = mono_encoder("aac", "fltp", bitrate)
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        """Encode 48 kHz mono int16 samples; the frames the encoder has completed so far."""
        frame = mono_frame(pcm, self._pts)
        self._pts += len(pcm)
        return [bytes(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[bytes]:
        """The frames still inside the encoder (the tail, padded to a whole frame)."""
        return [bytes(p) for p in self._ctx.encode(None)]


class AacTranscoder:
    """Program chunks in order → stamped AAC frames. Packets already encoded (overlaps,
    redeliveries) are skipped; holes up to a minute are encoded as silence so the stamps
    keep the Space's time; after a longer hole a new encoder starts at the new time.
    ``start_pts`` (a takeover's): the stamp of the first frame out."""

    def __init__(self, start_pts: int | None = None, bitrate: int = AAC_BITRATE) -> None:
        self.bitrate = bitrate
        # Space time of the next input sample wanted; the next frame out, its priming
        # frame, plays the ENCODER_DELAY samples before it (as silence).
        self.next_in = None if start_pts is None else start_pts + ENCODER_DELAY
        self.next_out = self.next_in  # where the encoder's delay is counted from
        self.last_src = -1
        self._enc: AacEncoder | None = None
        self._dec: OpusPacketDecoder | None = None

    def push(self, chunk: Chunk) -> list[tuple[int, bytes]]:
        """Encode one chunk; the frames it completed, with their stamps."""
        out: list[tuple[int, bytes]] = []
        self.last_src = max(self.last_src, chunk.seq)
        for i, packet in enumerate(chunk.packets):
            out += self.push_packet(chunk.pts + i * FRAME_SAMPLES, packet)
        return out

    def push_packet(self, pts: int, packet: bytes) -> list[tuple[int, bytes]]:
        """Encode one 20 ms Opus packet of Space time ``pts``."""
        out: list[tuple[int, bytes]] = []
        if self._enc is None:  # the first packet, or a takeover's: start where wanted
            self._restart(pts if self.next_in is None else self.next_in)
        assert self.next_in is not None
        if pts < self.next_in:
            return out
        gap = pts - self.next_in
        if gap > MAX_FILL:
            out += self.finish()
            self._restart(pts)
        elif gap:
            out += self._encode(np.zeros(gap, dtype=np.int16))
        return out + self._encode(self._decode(packet))

    def finish(self) -> list[tuple[int, bytes]]:
        """The encoder's tail (at the end of the program); the next push starts afresh."""
        if self._enc is None:
            return []
        out = self._stamp(self._enc.flush())
        self._enc = None
        self.next_in = self.next_out = None
        return out

    def _restart(self, pts: int) -> None:
        self._enc = AacEncoder(self.bitrate)
        self._dec = self._dec or OpusPacketDecoder()
        self.next_in = self.next_out = pts

    def _decode(self, packet: bytes) -> np.ndarray:
        assert self._dec is not None
        try:
            pcm = self._dec.decode(packet)
        except ValueError:
            pcm = self._dec.conceal()
        if len(pcm) != FRAME_SAMPLES:  # keep the Space's clock whatever the packet held
            pcm = np.pad(pcm[:FRAME_SAMPLES], (0, max(FRAME_SAMPLES - len(pcm), 0)))
        return pcm

    def _encode(self, pcm: np.ndarray) -> list[tuple[int, bytes]]:
        assert self._enc is not None and self.next_in is not None
        self.next_in += len(pcm)
        return self._stamp(self._enc.encode(pcm))

    def _stamp(self, frames: list[bytes]) -> list[tuple[int, bytes]]:
        assert self.next_out is not None
        first = self.next_out - ENCODER_DELAY
        out = [(first + i * AAC_FRAME_SAMPLES, f) for i, f in enumerate(frames)
               if first + i * AAC_FRAME_SAMPLES >= 0]  # not before the Space's start
        self.next_out += AAC_FRAME_SAMPLES * len(frames)
        return out
