"""Sequence continuity of received chunks: gaps, announced skips, delay behind live."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Continuity:
    """Checks one listener's chunk sequence; time is passed in (microseconds)."""

    last_seq: int | None = None
    chunks: int = 0
    gaps: int = 0  # chunks missing without a jump frame announcing them
    skipped: int = 0  # chunks the server announced skipping (jump frames)
    duplicates: int = 0
    delays_ms: list[float] = field(default_factory=list)

    def chunk(self, seq: int, sent_us: int, now_us: int) -> None:
        """A chunk arrived at now_us."""
        if self.last_seq is not None:
            if seq <= self.last_seq:
                self.duplicates += 1
                return
            self.gaps += seq - self.last_seq - 1
        self.last_seq = seq
        self.chunks += 1
        self.delays_ms.append(max(0.0, (now_us - sent_us) / 1000))

    def jump(self, to_seq: int) -> None:
        """The server said it skips ahead to to_seq (announced: not a gap)."""
        if self.last_seq is not None and to_seq > self.last_seq + 1:
            self.skipped += to_seq - self.last_seq - 1
        self.last_seq = to_seq - 1

    def resume_from(self) -> int | None:
        """The seq to ask for with ?from= after a drop."""
        return None if self.last_seq is None else self.last_seq + 1

    def take_delays(self) -> list[float]:
        """Delays seen since the last call (for per-second figures)."""
        out, self.delays_ms = self.delays_ms, []
        return out
