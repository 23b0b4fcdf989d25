"""Where JetStream's raft leaders should be: a decision with no I/O.

A stream's leader answers every write and, for KV buckets without direct reads, every
read. When the host running it is lost, nothing can be written until the survivors elect
another (4-9 s in nats-server). A failover needs the leases bucket, the MEDIA stream and
the Spaces bucket at once, so their leaders should not share a host with a stage: the
operator names NATS nodes on hosts without a stage, and whenever a watched stream is led
elsewhere, its leader is asked to step down in favour of the first of those nodes that
is a current replica of it. Elections (a lost node, a healed partition) move leaders
back and forth; each round looks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FRESH_S = 2.0   # a replica heard from longer ago than this may be gone: not a target
SETTLE_S = 10.0  # after asking a stream to move, let its election finish and info catch up


@dataclass(frozen=True)
class Replica:
    """A follower of a stream as its leader reports it."""

    name: str
    current: bool
    offline: bool = False
    active_s: float = 0.0  # since the leader last heard from it


@dataclass(frozen=True)
class StreamCluster:
    """One stream's raft group: its leader (None while electing) and its followers."""

    stream: str
    leader: str | None
    replicas: tuple[Replica, ...] = ()


@dataclass(frozen=True)
class Move:
    """Ask ``stream``'s leader (``source``) to hand over to ``target``."""

    stream: str
    source: str
    target: str


@dataclass(frozen=True)
class Round:
    """What one look at the streams decided: the moves to ask for, and the streams led
    by a node not preferred (moving or not: a metric and a log line)."""

    moves: tuple[Move, ...]
    misplaced: frozenset[str]
    stuck: frozenset[str]  # misplaced, and no preferred replica fit to take over


@dataclass
class LeaderPlacement:
    """Keeps each watched stream's leader on a preferred node, in the operator's order."""

    preferred: Sequence[str]
    settle_s: float = SETTLE_S
    fresh_s: float = FRESH_S
    _asked: dict[str, float] = field(default_factory=dict)  # stream -> when last moved

    def decide(self, clusters: Iterable[StreamCluster], now: float) -> Round:
        """The moves for these streams at time ``now`` (seconds, any monotonic clock).
        Moves are remembered: the same stream is not asked again within ``settle_s``."""
        moves: list[Move] = []
        misplaced: set[str] = set()
        stuck: set[str] = set()
        for c in clusters:
            if not self.preferred or c.leader is None or c.leader in self.preferred:
                continue  # nothing asked for; electing (no one to ask); or in place
            misplaced.add(c.stream)
            if now - self._asked.get(c.stream, -float("inf")) < self.settle_s:
                continue
            target = self.target(c)
            if target is None:
                stuck.add(c.stream)
                continue
            moves.append(Move(c.stream, c.leader, target))
            self._asked[c.stream] = now
        return Round(tuple(moves), frozenset(misplaced), frozenset(stuck))

    def target(self, c: StreamCluster) -> str | None:
        """The first preferred node that is a current, recently heard replica of ``c``:
        handing the lead to a replica that lags would stall writes until it caught up."""
        fit = {r.name for r in c.replicas
               if r.current and not r.offline and r.active_s <= self.fresh_s}
        return next((name for name in self.preferred if name in fit), None)


def parse_nodes(text: str) -> tuple[str, ...]:
    """NATS server names from "n1,n2" (the operator's order kept, repeats dropped);
    ValueError on a name nats-server would not have."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if not all(ch.isalnum() or ch in "-_." for ch in name) or len(name) > 64:
            raise ValueError(f"not a NATS server name: {name!r}")
    return tuple(dict.fromkeys(names))
