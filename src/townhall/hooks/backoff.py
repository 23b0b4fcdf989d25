"""When a failed delivery is tried again, and when it is given up: exponential backoff
with jitter, bounded by attempts and by the event's age. Time is passed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrySchedule:
    """Attempt n (1-based) that failed waits ``first_s * 2**(n-1)`` capped at ``max_s``,
    half of it fixed and half random, so endpoints that come back are not hit in step."""

    first_s: float = 5.0
    max_s: float = 3600.0
    give_up_after_s: float = 24 * 3600.0
    max_attempts: int = 50

    def delay(self, failed_attempts: int, rand: float) -> float:
        """Seconds to wait after ``failed_attempts`` failures; ``rand`` in [0, 1)."""
        base = min(self.max_s, self.first_s * 2 ** max(0, failed_attempts - 1))
        return base / 2 + base / 2 * rand

    def next_attempt(self, failed_attempts: int, *, first_seen: float, now: float,
                     rand: float) -> float | None:
        """When to try again (absolute, like ``now``), or None: give up and drop it."""
        if failed_attempts >= self.max_attempts:
            return None
        at = now + self.delay(failed_attempts, rand)
        if at - first_seen > self.give_up_after_s:
            return None
        return at
