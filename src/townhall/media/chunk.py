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
        return FRAME_SAMPLES * len(self.packets)

    def encode(self) -> bytes:
        parts = [_HEAD.pack(MAGIC, self.seq, self.pts, self.sent_us, len(self.packets))]
        for pkt in self.packets:
            parts.append(_LEN.pack(len(pkt)))
            parts.append(pkt)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Chunk:
        if len(data) < _HEAD.size:
            raise BadInput("chunk too short", slug="bad-chunk")
        magic, seq, pts, sent, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise BadInput("not a townhall chunk", slug="bad-chunk")
        off = _HEAD.size
        packets = []
        for _ in range(n):
            if off + 2 > len(data):
                raise BadInput("chunk truncated", slug="bad-chunk")
            (size,) = _LEN.unpack_from(data, off)
            off += 2
            if off + size > len(data):
                raise BadInput("chunk truncated", slug="bad-chunk")
            packets.append(bytes(data[off:off + size]))
            off += size
        return cls(seq=seq, pts=pts, sent_us=sent, packets=tuple(packets))
