"""Which stage takes a Space nobody holds, with no I/O: capacity, load, and a wait.

Every stage hears the others' heartbeats (budget, speakers, CPU, whether it is stopping)
and follows the lease bucket (who holds which Space, seen the moment a lease is taken,
renewed or handed back). When a live Space has no lease, every stage with room may race
for it (create-only: one wins), but first waits ``Placement.wait``: nothing but a little
jitter if it is the least loaded stage with room, ``STEP_S`` more for every Space of load
it carries above that stage, more again if its CPU is hot and a cooler stage has room.
So the least loaded stage normally takes the Space, and if it cannot (it died a moment
ago, or is cut off), the next one does a moment later. A stage at its budget takes
nothing, even when no other stage has room: the budget protects the audio of the Spaces
it already mixes (DESIGN.md: never degrade the mix to serve something new); the Space
waits without an owner (WHIP answers ``503 no-stage``) until a stage has room.

Counts of Spaces come from the leases (fresh to a few ms), not from heartbeats (up to a
second old), so that a burst of new Spaces spreads evenly: after each take the taker is
one Space ahead, and waits until the others have caught up or ``STEP_S`` has passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STEP_S = 0.1          # extra wait per Space of load above the least loaded stage with room
JITTER_S = 0.02       # spread between stages at the same load (drawn per attempt)
MAX_WAIT_S = 2.0      # however loaded: a Space the others leave is taken within this
HOT_CPU = 0.8         # share of one core above which a stage yields to cooler ones
HOT_S = 0.3           # how long a hot stage yields
PEER_STALE_S = 3.0    # a stage not heard from for this long is not counted as a rival
SPEAKER_LOAD = 1.0    # a connected speaker (decode, mix-minus encode) weighs one Space


@dataclass(frozen=True)
class Capacity:
    """One stage's budget and load, as its heartbeat says."""

    node: str
    max_spaces: int = 0      # 0: no budget
    speakers: int = 0
    cpu: float = 0.0         # share of one core its process used lately
    draining: bool = False   # stopping: handing its Spaces over, takes none

    @property
    def hot(self) -> bool:
        """Its process uses so much of a core that a cooler stage should take new Spaces."""
        return self.cpu >= HOT_CPU

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Capacity | None:
        """From a heartbeat (``townhall.stages.<node>``); None if it names no node. A stage
        of an older version (no budget in its heartbeat) counts as having no budget."""
        node = report.get("node")
        if not isinstance(node, str) or not node:
            return None
        try:
            return cls(node=node, max_spaces=max(0, int(report.get("max_spaces", 0))),
                       speakers=max(0, int(report.get("speakers", 0))),
                       cpu=max(0.0, float(report.get("cpu", 0.0))),
                       draining=bool(report.get("draining", False)))
        except (TypeError, ValueError):
            return None


def full(spaces: int, max_spaces: int) -> bool:
    """Whether a stage holding ``spaces`` is at its budget (0: no budget)."""
    return max_spaces > 0 and spaces >= max_spaces


@dataclass
class Placement:
    """One stage's view of its rivals and of who holds which Space; time is passed in."""

    node: str
    max_spaces: int = 0      # our budget; 0: none
    lease_ttl_s: float = 3.0
    peers: dict[str, tuple[Capacity, float]] = field(default_factory=dict)
    holders: dict[str, tuple[str, float]] = field(default_factory=dict)
    held: Counter[str] = field(default_factory=Counter)

    def heard(self, cap: Capacity, now: float) -> None:
        """A stage's heartbeat (ours included: it is ignored as a rival)."""
        self.peers[cap.node] = (cap, now)

    def lease(self, space: str, holder: str | None, now: float) -> bool:
        """A lease written (``holder``) or deleted (None), as the watch saw it at ``now``;
        returns whether the holder changed (a renewal does not change it)."""
        before = self.holders.pop(space, None)
        if before is not None:
            self._uncount(before[0])
        if holder is not None:
            self.holders[space] = (holder, now)
            self.held[holder] += 1
        return (before[0] if before else None) != holder

    def holder(self, space: str) -> str | None:
        """Who holds ``space``'s lease as last seen (lapsed ones are forgotten by
        ``unheld``)."""
        found = self.holders.get(space)
        return found[0] if found else None

    def unheld(self, spaces: Iterable[str], now: float) -> list[str]:
        """Of ``spaces``, those without a lease: never seen, deleted, or not renewed for a
        whole TTL (its holder died: a lapse shows no delete in a watch)."""
        out = []
        for space in spaces:
            found = self.holders.get(space)
            if found is not None and now - found[1] > self.lease_ttl_s:
                self.lease(space, None, now)
                found = None
            if found is None:
                out.append(space)
        return out

    def holding(self, node: str) -> int:
        """How many leases ``node`` holds, as the watch shows them."""
        return self.held.get(node, 0)

    def rivals(self, now: float) -> list[Capacity]:
        """Other stages heard lately, not stopping, with room under their budget."""
        for node in [n for n, (_, at) in self.peers.items() if now - at > PEER_STALE_S]:
            del self.peers[node]
        return [cap for cap, _ in self.peers.values()
                if cap.node != self.node and not cap.draining
                and not full(self.holding(cap.node), cap.max_spaces)]

    def load(self, cap: Capacity, spaces: int) -> float:
        """A stage's load in Spaces, scaled to our budget when both have one (a stage with
        twice our budget at 20 Spaces is as loaded as we are at 10)."""
        score = spaces + SPEAKER_LOAD * cap.speakers
        if self.max_spaces > 0 and cap.max_spaces > 0:
            score *= self.max_spaces / cap.max_spaces
        return score

    def wait(self, now: float, *, spaces: int, speakers: int, cpu: float,
             jitter: float) -> float | None:
        """How long this stage waits before racing for an unheld Space, holding
        ``spaces`` (its own count, claims in flight included) with ``speakers`` at ``cpu``;
        None when it is at its budget. ``jitter`` in [0, 1) is drawn by the caller."""
        if full(spaces, self.max_spaces):
            return None
        me = Capacity(self.node, self.max_spaces, speakers, cpu)
        rivals = self.rivals(now)
        mine = self.load(me, spaces)
        least = min((self.load(r, self.holding(r.node)) for r in rivals), default=mine)
        wait = min(MAX_WAIT_S, STEP_S * max(0.0, mine - least))
        if me.hot and any(not r.hot for r in rivals):
            wait += HOT_S
        return wait + JITTER_S * jitter

    def _uncount(self, node: str) -> None:
        self.held[node] -= 1
        if self.held[node] <= 0:
            del self.held[node]


@dataclass
class CpuMeter:
    """Share of one core a process used, smoothed over a few seconds of samples."""

    smoothing: float = 0.5   # weight of the newest sample
    share: float = 0.0
    _last: tuple[float, float] | None = None

    def sample(self, cpu_s: float, wall_s: float) -> float:
        """Feed the process's CPU seconds and a monotonic clock reading; the share now."""
        if self._last is not None and wall_s > self._last[1]:
            now = (cpu_s - self._last[0]) / (wall_s - self._last[1])
            self.share += self.smoothing * (max(0.0, now) - self.share)
        self._last = (cpu_s, wall_s)
        return self.share
