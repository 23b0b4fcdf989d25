"""How often the edge hands chunks to its listeners: 100 ms, coarser while it lags (Sans-I/O).

Under load the edge coalesces chunks (several per wake-up, one socket write per listener
with direct writes) instead of stalling anyone or dropping audio: latency degrades step by
step, continuity never does.

Signals, each passed in per tick: how late the tick woke (a stuck or starved loop), the
share of listeners behind (their writes queue or their sockets back up), and how busy the
process was (CPU seconds per wall second). The busy share is what says "this edge is out of
CPU": with direct writes one fan-out of 10,000 listeners is a single burst of tens of
milliseconds, which by itself is not overload, so a late tick alone only counts when it is
very late (over 250 ms, or half the interval).

A tick that shows any of these is hot. The interval steps up when enough of the last few
ticks were hot, not only a run of them in a row: a loop blocked in bursts wakes late, then
on time in the gap between bursts, then late again, and that is overload too. It steps down
after a run of calm ticks, and only when the finer step is predicted to fit (CPU and loop
lag both), so it does not flap between two steps.

The prediction splits the edge's CPU into a part paid per write (one per listener per
flush: it grows as the interval shrinks) and a part that does not change with the interval
(bytes copied, chunks received, the process's own upkeep). Assuming every bit of it scales
with the write count overstated the finer step and kept the edge at a coarse interval with
the core half idle; how the split was measured is in docs/capacity.md ("How the pacer
predicts a finer step").
"""

from __future__ import annotations

from collections import deque

STEPS_S: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def steps_from(floor_s: float) -> tuple[float, ...]:
    """The delivery steps of an edge whose operator set a floor (``floor_s``, clamped to
    0.1..1 s): the floor itself, then the coarser default steps."""
    floor_s = min(max(floor_s, STEPS_S[0]), STEPS_S[-1])
    return (floor_s, *(s for s in STEPS_S if s > floor_s + 1e-9))


class Pacer:
    """Steps the delivery interval up when overloaded, down when the next step would fit."""

    def __init__(self, *, lag_high_s: float = 0.25,
                 behind_high: float = 0.25, behind_low: float = 0.05,
                 busy_high: float = 0.85, busy_low: float = 0.7, smoothing: float = 0.05,
                 calm_ticks: int = 10, hot_ticks: int = 2, window: int = 6,
                 floor_s: float = STEPS_S[0], fixed_share: float = 0.4) -> None:
        # The finest interval is the operator's floor (default 100 ms): an edge whose
        # listeners accept more delay writes less often, like an Icecast fed 1 s pages.
        self.steps = steps_from(floor_s)
        self.lag_high_s = lag_high_s       # at 100 ms; half the interval when coarser
        self.behind_high = behind_high     # fraction of listeners with writes queued up
        self.behind_low = behind_low
        self.busy_high = busy_high         # smoothed CPU share that means "out of CPU"
        self.busy_low = busy_low           # ... the next finer step must stay under this
        # Weight of the newest busy sample (EWMA, ~2 s): a coarse interval makes every
        # flush tick a CPU spike, and one spike must not read as "the finer step won't fit".
        self.smoothing = smoothing
        self.calm_ticks = calm_ticks       # ~1 s calm before stepping down a step
        # Share of the CPU at the finest step that does not scale with the number of
        # writes (measured, see the module docstring).
        self.fixed_share = fixed_share
        # Hot ticks among the last `window` that step up. Two late ticks within six mean
        # the loop stood still for at least 0.5 s out of about 1.1 s; one alone is a hiccup.
        self.hot_ticks = hot_ticks
        self.step = 0
        self.busy = 0.0
        self._calm = 0
        self._recent: deque[bool] = deque(maxlen=max(window, hot_ticks))

    @property
    def interval_s(self) -> float:
        """How often listeners are written to now, in seconds."""
        return self.steps[self.step]

    def _late(self, lag_s: float, step: int) -> bool:
        # A coarser interval means bigger flushes; their own burst must not read as lag.
        return lag_s > max(self.lag_high_s, self.steps[step] / 2)

    def predict(self, interval_s: float) -> float:
        """The CPU share delivery at ``interval_s`` would take, from the smoothed share at
        the current interval: a fixed part, plus a per-write part ∝ 1 / interval."""
        def cost(at: float) -> float:  # relative to the cost at 100 ms, where it was measured
            return self.fixed_share + (1 - self.fixed_share) * STEPS_S[0] / at

        return self.busy * cost(interval_s) / cost(self.interval_s)

    def _finer_fits(self, lag_s: float) -> bool:
        if self.step == 0:
            return True
        cpu = self.predict(self.steps[self.step - 1]) < self.busy_low
        # A lag this step tolerates but the finer one would not is not calm: stepping
        # down on it would step straight back up (flapping).
        return cpu and not self._late(lag_s, self.step - 1)

    def observe(self, lag_s: float, behind: float, busy: float = 0.0) -> float:
        """Feed one tick's loop lag, fraction of listeners behind and CPU share (0..1);
        returns the delivery interval."""
        self.busy += self.smoothing * (busy - self.busy)
        hot = (self._late(lag_s, self.step) or behind > self.behind_high
               or self.busy > self.busy_high)
        self._recent.append(hot)
        if hot:
            self._calm = 0
            if sum(self._recent) >= self.hot_ticks and self.step < len(self.steps) - 1:
                self.step += 1
                self._recent.clear()  # the coarser step is judged on its own ticks
        elif behind < self.behind_low and self._finer_fits(lag_s):
            self._calm += 1
            if self._calm >= self.calm_ticks and self.step > 0:
                self.step -= 1
                self._calm = 0
        else:
            self._calm = 0
        return self.interval_s
