"""Who is speaking, with no I/O: per-speaker loudness folded into a report ≤ 4 per second."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FULL_SCALE = 32767.0
QUIET_RMS = 1e-3  # relative to full scale (−60 dBFS): the bottom of the level scale
# A frame is audible when its level is above 0: mean square above (QUIET_RMS · FULL_SCALE)².
AUDIBLE_MS = (QUIET_RMS * FULL_SCALE) ** 2


def level_of_ms(mean_square: float) -> float:
    """Loudness 0..1 of a frame's mean square (RMS relative to full scale, 60 dB scale)."""
    rms = math.sqrt(mean_square) / FULL_SCALE
    if rms <= QUIET_RMS:
        return 0.0
    return min(1.0, 1.0 + 20.0 * math.log10(rms) / 60.0)


def mean_square(pcm: np.ndarray) -> float:
    """The mean of a frame's squared samples (0 for an empty frame)."""
    if pcm.size == 0:
        return 0.0
    x = pcm.astype(np.float32)
    return float(np.dot(x, x)) / pcm.size


def level(pcm: np.ndarray) -> float:
    """Loudness 0..1 of a frame (RMS relative to full scale, on a 60 dB scale)."""
    return level_of_ms(mean_square(pcm))


def audible(pcm: np.ndarray | None) -> bool:
    """Whether a frame would show on the level meter (RMS above −60 dBFS)."""
    return pcm is not None and mean_square(pcm) > AUDIBLE_MS


@dataclass
class LevelMeter:
    """Peak level per speaker since the last report; a report at most every ``interval_s``.

    The rate bound lives here rather than in the caller so that however often the mixer
    ticks, ``townhall.<id>.levels`` carries at most 1 / ``interval_s`` messages a second.
    Per frame it keeps only the loudest mean square (the level is a monotonic function of
    it); the logarithm is taken once per report, not once per frame.
    """

    interval_s: float = 0.25
    speaking_above: float = 0.1
    _peaks: dict[str, float] = field(default_factory=dict)  # loudest mean square
    _last_at: float | None = None

    def add(self, identity: str, pcm: np.ndarray | None) -> bool:
        """One frame a speaker contributed to the mix (None or muted = silent); whether it
        is audible (the silence gate's input)."""
        value = 0.0 if pcm is None else mean_square(pcm)
        if value > self._peaks.get(identity, 0.0) or identity not in self._peaks:
            self._peaks[identity] = value
        return value > AUDIBLE_MS

    def report(self, space: str, present: Iterable[str], now: float,
               wall: float) -> dict[str, Any] | None:
        """The levels message if one is due at monotonic ``now`` (``wall`` = unix time)."""
        if self._last_at is not None and now - self._last_at < self.interval_s:
            return None
        self._last_at = now
        levels = {i: round(level_of_ms(self._peaks.get(i, 0.0)), 3) for i in sorted(present)}
        self._peaks = {}
        if not levels:
            return None
        return {"space": space, "levels": levels,
                "speaking": [i for i, v in levels.items() if v > self.speaking_above],
                "at": wall}
