"""Who is speaking, with no I/O: per-speaker loudness folded into a report ≤ 4 per second."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FULL_SCALE = 32767.0


def level(pcm: np.ndarray) -> float:
    """Loudness 0..1 of a frame (RMS relative to full scale, on a 60 dB scale)."""
    if pcm.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) / FULL_SCALE
    if rms <= 1e-3:
        return 0.0
    return min(1.0, 1.0 + 20.0 * np.log10(rms) / 60.0)


@dataclass
class LevelMeter:
    """Peak level per speaker since the last report; a report at most every ``interval_s``.

    The rate bound lives here rather than in the caller so that however often the mixer
    ticks, ``townhall.<id>.levels`` carries at most 1 / ``interval_s`` messages a second.
    """

    interval_s: float = 0.25
    speaking_above: float = 0.1
    _peaks: dict[str, float] = field(default_factory=dict)
    _last_at: float | None = None

    def add(self, identity: str, pcm: np.ndarray | None) -> None:
        """One frame a speaker contributed to the mix (None or muted = silent)."""
        value = 0.0 if pcm is None else level(pcm)
        self._peaks[identity] = max(self._peaks.get(identity, 0.0), value)

    def report(self, space: str, present: Iterable[str], now: float,
               wall: float) -> dict[str, Any] | None:
        """The levels message if one is due at monotonic ``now`` (``wall`` = unix time)."""
        if self._last_at is not None and now - self._last_at < self.interval_s:
            return None
        self._last_at = now
        levels = {i: round(self._peaks.get(i, 0.0), 3) for i in sorted(present)}
        self._peaks = {}
        if not levels:
            return None
        return {"space": space, "levels": levels,
                "speaking": [i for i, v in levels.items() if v > self.speaking_above],
                "at": wall}
