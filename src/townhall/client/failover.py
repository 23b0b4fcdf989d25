"""Which edge a listener tries next and how long it waits first, with no I/O.

The api lists the edges serving a Space, least loaded first. A listener goes to the
first; when that edge dies it moves down the list at once (an edge failing is not a
reason to wait), and only when every edge has failed in a row does it back off, with
full jitter so a crowd that lost the same edge does not come back in the same second.
An edge that answers "full" names a retry delay; the listener tries the next edge
first and waits that long (jittered) only when all of them are full.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class EdgeChooser:
    """Round-robin over a Space's edges with immediate failover and jittered backoff."""

    edges: list[str]
    rng: random.Random = field(default_factory=random.Random)
    base_s: float = 0.25
    cap_s: float = 10.0
    _index: int = 0
    _failures_in_row: int = 0
    _retry_after: float = 0.0

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("no edge to listen from")

    @property
    def current(self) -> str:
        """The edge to try now."""
        return self.edges[self._index % len(self.edges)]

    def connected(self) -> None:
        """The current edge admitted us and audio flows: forget past failures."""
        self._failures_in_row = 0
        self._retry_after = 0.0

    def failed(self, retry_after: float | None = None) -> float:
        """The current edge dropped or refused us: move on; returns seconds to wait."""
        self._failures_in_row += 1
        if retry_after is not None:
            self._retry_after = max(self._retry_after, retry_after)
        self._index = (self._index + 1) % len(self.edges)
        if self._failures_in_row < len(self.edges):
            return 0.0  # another edge has not been tried yet in this round
        rounds = self._failures_in_row // len(self.edges)
        ceiling = min(self.cap_s, self.base_s * 2 ** (rounds - 1))
        if self._retry_after:
            # The edges said when; spread the crowd over [retry_after, 2 × retry_after).
            return self._retry_after * (1.0 + self.rng.random())
        return self.rng.uniform(0.0, ceiling)

    def refresh(self, edges: list[str]) -> None:
        """A newer edge list from the api; stay on the current edge if it is still listed."""
        if not edges:
            return
        current = self.current
        self.edges = list(edges)
        self._index = self.edges.index(current) if current in self.edges else 0
