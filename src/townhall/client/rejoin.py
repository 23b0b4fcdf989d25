"""How long a speaker's WHIP client waits before its next offer, with no I/O.

A speaker is one of at most 13 per Space, never a crowd, and while it waits the Space
hears nothing of it: so it comes back as soon as it may. A session that was live and
dropped (its stage died or was cut off) is offered again at once. ``503 no-stage`` means a
takeover is under way (the old owner's lease has lapsed, the next stage has not taken it
yet), ``503 bus-unavailable`` that NATS is electing a leader: both clear within seconds, so
the client asks again every quarter to half second, for a bounded number of tries, rather
than back off exponentially, since a backoff grown over a few refusals outlasts the
takeover (it added 2-4 s to a failover). Any other
refusal with a ``Retry-After`` is honoured, jittered; other failures (unreachable, ICE)
back off with full jitter. Past failures are forgotten once a session is live.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Refusals that mean "the cluster is failing over": no stage holds the Space yet, or NATS
# did not answer the api in time (a raft election under way).
FAILING_OVER = frozenset({"no-stage", "bus-unavailable"})


@dataclass
class RejoinPacer:
    """Seconds to wait before the next WHIP offer, from what ended the last one."""

    rng: random.Random = field(default_factory=random.Random)
    base_s: float = 0.25
    cap_s: float = 5.0
    poll_s: tuple[float, float] = (0.25, 0.5)  # while a takeover is under way
    poll_tries: int = 40  # ≈ 15 s of takeover polling, then the usual backoff
    _failures: int = 0
    _polls: int = 0

    def live(self) -> None:
        """A session came up: forget past failures."""
        self._failures = 0
        self._polls = 0

    def dropped(self) -> float:
        """A live session ended: its stage is gone; offer again at once."""
        self.live()
        return 0.0

    def refused(self, status: int, slug: str, retry_after: float | None) -> float:
        """The server refused the offer with ``status`` and problem type ``slug``."""
        if status == 503 and slug in FAILING_OVER and self._polls < self.poll_tries:
            self._polls += 1
            return self.rng.uniform(*self.poll_s)
        if retry_after is not None and status in (429, 503):
            self._failures += 1
            # The server said when; spread retries over [retry_after, 2 × retry_after).
            return retry_after * (1.0 + self.rng.random())
        return self.failed()

    def failed(self) -> float:
        """Unreachable, ICE failed, or a refusal that names no delay: full-jitter backoff."""
        self._failures += 1
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** self._failures))
