"""Opus packets → sequence-numbered chunks, with no I/O (time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field

from townhall.media.chunk import FRAME_SAMPLES, Chunk


@dataclass
class Packager:
    """Groups ``frames_per_chunk`` packets into a Chunk; seq +1 per chunk, never reused."""

    next_seq: int = 0
    next_pts: int = 0
    frames_per_chunk: int = 5
    _packets: list[bytes] = field(default_factory=list)
    _first_pts: int = 0

    def add(self, packet: bytes, now_us: int) -> Chunk | None:
        """Take one 20 ms packet; the chunk it completes, stamped ``now_us``, or None."""
        if not self._packets:
            self._first_pts = self.next_pts
        self._packets.append(packet)
        self.next_pts += FRAME_SAMPLES
        if len(self._packets) < self.frames_per_chunk:
            return None
        chunk = Chunk(seq=self.next_seq, pts=self._first_pts, sent_us=now_us,
                      packets=tuple(self._packets))
        self.next_seq += 1
        self._packets = []
        return chunk

    @classmethod
    def after(cls, last: Chunk | None, frames_per_chunk: int = 5) -> Packager:
        """Continue where a previous stage stopped (takeover), or start at zero."""
        if last is None:
            return cls(frames_per_chunk=frames_per_chunk)
        return cls(next_seq=last.seq + 1, next_pts=last.pts + last.duration_samples,
                   frames_per_chunk=frames_per_chunk)
