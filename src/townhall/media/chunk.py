"""The program chunk: the unit of audio that stage publishes and every edge shares.

A chunk carries a few consecutive 20 ms Opus packets of a Space's program mix, with a
strictly increasing sequence number. Wire form (big-endian), the payload of a NATS
message on ``townhall.<space>.media``::

    magic  b"THC1"          4 bytes
    seq    u64              chunk sequence number, +1 per chunk, never reused
    pts    u64              48 kHz sample index of the first packet
    sent   u64              stage wall clock at publish, microseconds since the epoch
    n      u16              number of Opus packets
    n × (u16 length, packet bytes)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from townhall.problems import BadInput

MAGIC = b"THC1"
_HEAD = struct.Struct(">4sQQQH")
_LEN = struct.Struct(">H")
SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz


@dataclass(frozen=True)
class Chunk:
    """Consecutive Opus packets of the program, in order."""

    seq: int
    pts: int
    sent_us: int
    packets: tuple[bytes, ...]

    @property
    def duration_samples(self) -> int:
        """How many 48 kHz samples the chunk's packets play."""
        return FRAME_SAMPLES * len(self.packets)

    def encode(self) -> bytes:
        """The wire form (above)."""
        return pack_frames(_HEAD.pack(MAGIC, self.seq, self.pts, self.sent_us,
                                      len(self.packets)), self.packets)

    @classmethod
    def decode(cls, data: bytes) -> Chunk:
        """A chunk from its wire form; BadInput (``bad-chunk``) if it is not one."""
        if len(data) < _HEAD.size:
            raise BadInput("chunk too short", slug="bad-chunk")
        magic, seq, pts, sent, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise BadInput("not a townhall chunk", slug="bad-chunk")
        return cls(seq=seq, pts=pts, sent_us=sent,
                   packets=unpack_frames(data, _HEAD.size, n, "chunk"))


def pack_frames(head: bytes, frames: Iterable[bytes]) -> bytes:
    """``head``, then each frame after its u16 length: a chunk's or an AAC batch's wire form."""
    parts = [head]
    for frame in frames:
        parts += [_LEN.pack(len(frame)), frame]
    return b"".join(parts)


def unpack_frames(data: bytes, off: int, n: int, what: str) -> tuple[bytes, ...]:
    """The ``n`` length-prefixed frames of ``data`` from ``off`` on; BadInput ("<what>
    truncated") when it ends first."""
    frames = []
    for _ in range(n):
        if off + 2 > len(data):
            raise BadInput(f"{what} truncated", slug="bad-chunk")
        (size,) = _LEN.unpack_from(data, off)
        off += 2
        if off + size > len(data):
            raise BadInput(f"{what} truncated", slug="bad-chunk")
        frames.append(bytes(data[off:off + size]))
        off += size
    return tuple(frames)
