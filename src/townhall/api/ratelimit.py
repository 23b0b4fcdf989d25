"""Token buckets per key (identity, address) for calls that cost something; no I/O
(time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBuckets:
    """``burst`` calls at once, refilled at ``rate`` a second, per key.

    A bucket that has refilled completely carries no information, so it is forgotten: a
    sweep runs after as many takes as there are buckets (at least ``sweep_min``), which
    keeps the cost per take constant on average and the memory bounded by the keys active
    within one refill time (``burst / rate``), not by every key ever seen.
    """

    rate: float = 5.0
    burst: float = 20.0
    sweep_min: int = 1024
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)
    _takes: int = 0
    _kept: int = 0          # buckets left after the last sweep

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 when allowed; otherwise seconds until the call would be allowed."""
        self._takes += 1
        if self._takes >= max(self.sweep_min, self._kept):
            self.sweep(now)
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._state[key] = (tokens - cost, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (cost - tokens) / self.rate

    def sweep(self, now: float) -> None:
        """Forget every bucket that is full again."""
        self._takes = 0
        full = [k for k, (t, last) in self._state.items()
                if t + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._state[key]
        self._kept = len(self._state)
