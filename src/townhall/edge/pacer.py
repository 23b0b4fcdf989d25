"""How often the edge hands chunks to its listeners: 100 ms, coarser while it lags (Sans-I/O).

Under load the edge coalesces chunks (several per wake-up) instead of stalling anyone or
dropping audio: latency degrades step by step, continuity never does.
"""

from __future__ import annotations

STEPS_S: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


class Pacer:
    """Steps the delivery interval up when the loop lags or writes queue, down when calm."""

    def __init__(self, *, lag_high_s: float = 0.05, lag_low_s: float = 0.015,
                 behind_high: float = 0.25, behind_low: float = 0.05,
                 calm_ticks: int = 30, hot_ticks: int = 2) -> None:
        self.lag_high_s = lag_high_s
        self.lag_low_s = lag_low_s
        self.behind_high = behind_high     # fraction of listeners with writes queued up
        self.behind_low = behind_low
        self.calm_ticks = calm_ticks       # ~3 s calm before stepping down
        self.hot_ticks = hot_ticks         # consecutive hot ticks before stepping up
        self.step = 0
        self._calm = 0
        self._hot = 0

    @property
    def interval_s(self) -> float:
        return STEPS_S[self.step]

    def observe(self, lag_s: float, behind: float) -> float:
        """Feed one tick's loop lag and fraction of listeners behind; returns the interval."""
        if lag_s > self.lag_high_s or behind > self.behind_high:
            self._calm = 0
            self._hot += 1
            if self._hot >= self.hot_ticks and self.step < len(STEPS_S) - 1:
                self.step += 1
                self._hot = 0
        elif lag_s < self.lag_low_s and behind < self.behind_low:
            self._hot = 0
            self._calm += 1
            if self._calm >= self.calm_ticks and self.step > 0:
                self.step -= 1
                self._calm = 0
        else:
            self._hot = 0
            self._calm = 0
        return self.interval_s
