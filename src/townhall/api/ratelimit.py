"""Token buckets per identity for mutating calls, with no I/O (time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBuckets:
    """``burst`` calls at once, refilled at ``rate`` a second, per key."""

    rate: float = 5.0
    burst: float = 20.0
    max_keys: int = 100_000
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 when allowed; otherwise seconds until the call would be allowed."""
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._state[key] = (tokens - cost, now)
            return 0.0
        self._state[key] = (tokens, now)
        if len(self._state) > self.max_keys:
            self._evict(now)
        return (cost - tokens) / self.rate

    def _evict(self, now: float) -> None:
        # Buckets that have refilled completely carry no information: forget them.
        full = [k for k, (t, last) in self._state.items()
                if t + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._state[key]
