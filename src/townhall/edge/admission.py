"""Admission control for listener joins: a cap on listeners and a token bucket (Sans-I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """Admit, or refuse with how many whole seconds to wait before retrying."""

    admitted: bool
    retry_after: int = 0
    reason: str = ""


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; time is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available."""
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self.rate)


class Admission:
    """Admits joins while under ``capacity`` listeners and within the join rate."""

    def __init__(self, capacity: int, join_rate: float, now: float,
                 burst: float | None = None, full_retry_s: int = 5) -> None:
        self.capacity = capacity
        self.full_retry_s = full_retry_s
        self.bucket = TokenBucket(join_rate, burst if burst is not None else join_rate, now)

    def decide(self, listeners: int, now: float) -> Decision:
        """Whether one more listener may join now, given how many are connected."""
        if listeners >= self.capacity:
            return Decision(False, self.full_retry_s, "full")
        if not self.bucket.take(now):
            return Decision(False, max(1, math.ceil(self.bucket.wait_s(now))), "join-rate")
        return Decision(True)
