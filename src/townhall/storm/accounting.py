"""Every simulated listener ends in exactly one bucket: connected, left, refused or failed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

CONNECTED = "connected"
LEFT = "left"  # listened, then left of its own accord (--stay)
REFUSED = "refused"
FAILED = "failed"
PENDING = "pending"


@dataclass
class Ledger:
    """The outcome of each listener, with a reason for every refusal or failure."""

    target: int
    _state: dict[int, str] = field(default_factory=dict)
    _reason: dict[int, str] = field(default_factory=dict)
    admitted: int = 0  # joins that got audio (a listener may be admitted more than once)
    refusals: int = 0  # refusal events, retried or not
    _was_refused: set[int] = field(default_factory=set)
    admitted_after_refusal: int = 0  # listeners who got in after being refused at least once

    def start(self, listener: int) -> None:
        """A listener begins trying to join."""
        self._state[listener] = PENDING
        self._reason.pop(listener, None)

    def connected(self, listener: int) -> None:
        """A listener received its first audio."""
        if self._state.get(listener) not in (CONNECTED, LEFT) and listener in self._was_refused:
            self.admitted_after_refusal += 1
        self._state[listener] = CONNECTED
        self._reason.pop(listener, None)
        self.admitted += 1

    def left(self, listener: int) -> None:
        """A connected listener left after listening for as long as it meant to."""
        self._state[listener] = LEFT
        self._reason.pop(listener, None)

    def refused(self, listener: int, reason: str) -> None:
        """A join was refused (it may be retried; the latest outcome counts)."""
        self.refusals += 1
        self._was_refused.add(listener)
        if self._state.get(listener) not in (CONNECTED, LEFT):
            self._state[listener] = REFUSED
            self._reason[listener] = reason

    def failed(self, listener: int, reason: str) -> None:
        """A listener failed (error, or lost its connection and could not get back)."""
        self._state[listener] = FAILED
        self._reason[listener] = reason

    def counts(self) -> dict[str, int]:
        """How many listeners are in each bucket now; never-started ones are pending."""
        c = Counter(self._state.values())
        c[PENDING] += self.target - len(self._state)
        return {k: c.get(k, 0) for k in (CONNECTED, LEFT, REFUSED, FAILED, PENDING)}

    def reasons(self) -> dict[str, int]:
        """Refusal and failure reasons with their listener counts."""
        return dict(Counter(f"{self._state[i]}: {r}" for i, r in self._reason.items()))

    def close(self) -> None:
        """At the end, anyone still pending failed: they never got audio."""
        for i in range(self.target):
            if self._state.get(i, PENDING) == PENDING:
                self.failed(i, "no audio before the end")

    def balanced(self) -> bool:
        """The buckets sum to the target."""
        return sum(self.counts().values()) == self.target
