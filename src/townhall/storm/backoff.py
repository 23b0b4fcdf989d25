"""Full-jitter exponential backoff that never retries before the server's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for successive retries: uniform(0, min(cap, base·2^n)), at least retry_after."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt; a server's Retry-After is a floor."""
        ceiling = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        delay = self.rng.uniform(0, ceiling)
        if retry_after is not None and retry_after > 0:
            # Spread retries over [retry_after, retry_after + jitter] so they do not align.
            delay = retry_after + self.rng.uniform(0, min(ceiling, retry_after))
        return delay

    def reset(self) -> None:
        """After a success, start again from the base delay."""
        self.attempt = 0
