"""How much WHIP negotiation a stage takes on at once; no I/O.

Each negotiation (parse the offer, build the peer connection, gather ICE, answer) runs on the
loop that also runs every Space's mixer clock. The stage does not trust the api's budgets
(there may be many api processes, or a buggy one): it takes at most ``per_stage``
negotiations at a time, at most ``per_space`` for any one Space, and refuses the rest at
once (503 + Retry-After) rather than queueing work it would do late.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

NEGOTIATION_TIMEOUT_S = 8.0   # the api waits 15 s for the stage's answer
MAX_IN_FLIGHT = 4
MAX_IN_FLIGHT_PER_SPACE = 2


@dataclass
class NegotiationGate:
    """Negotiations in flight, per stage and per Space."""

    per_stage: int = MAX_IN_FLIGHT
    per_space: int = MAX_IN_FLIGHT_PER_SPACE
    busy: Counter[str] = field(default_factory=Counter)

    @property
    def in_flight(self) -> int:
        """Negotiations in flight on this stage."""
        return sum(self.busy.values())

    def enter(self, space: str) -> bool:
        """Take a slot for one negotiation in ``space``; False when the stage or Space is busy."""
        if self.in_flight >= self.per_stage or self.busy[space] >= self.per_space:
            return False
        self.busy[space] += 1
        return True

    def leave(self, space: str) -> None:
        """Give back the slot ``enter`` took."""
        self.busy[space] -= 1
        if self.busy[space] <= 0:
            del self.busy[space]
