"""A speaker's connection quality, with no I/O: packet loss and jitter → good / fair / poor.

The stage grades each speaker's uplink from its own jitter-buffer figures over the last few
seconds (sent to the host in the levels message); ``townhall speak`` grades its own link
from the stage's RTCP receiver reports with the same thresholds, so both say the same.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal, TypedDict

Grade = Literal["good", "fair", "poor"]


class LinkReport(TypedDict):
    """One speaker's uplink as the levels message carries it (bus ``SpeakerLink``)."""

    quality: Grade
    loss_pct: float
    jitter_ms: float

# Where listeners start to hear it, with FEC and concealment doing their part (see
# bench/quality): a few % of random loss is repaired almost inaudibly; past ~10 % or with
# jitter past what the buffer absorbs without a deep target, speech is audibly damaged.
FAIR_LOSS, POOR_LOSS = 0.02, 0.10
FAIR_JITTER_S, POOR_JITTER_S = 0.020, 0.050


def grade(loss: float, jitter_s: float) -> Grade:
    """The grade for a loss fraction (0..1) and an interarrival jitter (seconds)."""
    if loss >= POOR_LOSS or jitter_s >= POOR_JITTER_S:
        return "poor"
    if loss >= FAIR_LOSS or jitter_s >= FAIR_JITTER_S:
        return "fair"
    return "good"


@dataclass
class LinkGauge:
    """Loss over a sliding window from cumulative counters sampled now and then."""

    window_s: float = 5.0
    _marks: deque[tuple[float, int, int]] = field(default_factory=deque)

    def sample(self, received: int, missing: int, now: float) -> float:
        """Cumulative packets ``received`` and ``missing`` (lost or too late) at ``now``;
        returns the fraction missing over about the last ``window_s`` seconds."""
        self._marks.append((now, received, missing))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window_s:
            self._marks.popleft()
        _, r0, m0 = self._marks[0]
        got, miss = received - r0, missing - m0
        return miss / (got + miss) if got + miss > 0 else 0.0

    def report(self, received: int, missing: int, jitter_s: float,
               now: float) -> LinkReport:
        """What the levels message carries for one speaker."""
        loss = self.sample(received, missing, now)
        return {"quality": grade(loss, jitter_s), "loss_pct": round(100 * loss, 1),
                "jitter_ms": round(1000 * jitter_s, 1)}
