"""Counting, never broadcasting: reactions summed per interval and the edges' per-second
reports folded into a Space's snapshot. No I/O; time is passed in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from townhall.room.snapshot import REACTIONS, EdgeSeen, Space, clone

STALE_S = 3.0  # an edge that has not reported for this long no longer counts


class EdgeReport(Protocol):
    """What an edge says once a second about one Space (the bus's ``ListenerStats``)."""

    @property
    def node(self) -> str:
        """The edge's node id."""
    @property
    def at(self) -> float:
        """When it counted (unix time)."""
    @property
    def listeners(self) -> int:
        """Its listeners in the Space."""
    @property
    def reactions(self) -> Mapping[str, int]:
        """Reactions by emoji since its last report."""
    @property
    def url(self) -> str | None:
        """Where listeners reach it."""
    @property
    def capacity(self) -> int:
        """How many listeners it takes in all."""


class EdgeBeat(Protocol):
    """What an edge says once a second about itself (the bus's ``EdgeHeartbeat``)."""

    @property
    def node(self) -> str:
        """The edge's node id."""
    @property
    def url(self) -> str | None:
        """Where listeners reach it."""
    @property
    def listeners(self) -> int:
        """Its listeners in all its Spaces."""
    @property
    def capacity(self) -> int:
        """How many listeners it takes in all."""


def fold(snap: Space, reports: Sequence[EdgeReport], reactions: Counter[str],
         now: float) -> Space:
    """The snapshot with these edge reports and reaction counts folded in."""
    out = clone(snap)
    edges, totals = out.edges, out.reactions
    counts: Counter[str] = Counter(reactions)
    for report in reports:
        old = edges.get(report.node)
        if old is not None and old.at > report.at:
            continue  # an older report arriving late
        edges[report.node] = EdgeSeen(listeners=max(0, report.listeners), url=report.url,
                                      capacity=report.capacity, at=report.at)
        for emoji, n in report.reactions.items():
            counts[emoji] += max(0, n)
    for node in [n for n, e in edges.items() if now - e.at > STALE_S]:
        del edges[node]
    for emoji, n in counts.items():
        if emoji in REACTIONS and n > 0:
            totals[emoji] = int(totals.get(emoji, 0)) + n
    out.listeners = sum(e.listeners for e in edges.values())
    return out


@dataclass
class ReactionTally:
    """Reactions received by this api process since the last flush, per Space."""

    pending: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, space: str, emoji: str, n: int = 1) -> None:
        """Count ``n`` reactions ``emoji`` to the Space."""
        self.pending.setdefault(space, Counter())[emoji] += n

    def take(self) -> dict[str, Counter[str]]:
        """The counts since the last take, per Space; start afresh."""
        out, self.pending = self.pending, {}
        return out


@dataclass
class EdgeRegistry:
    """Every edge's latest heartbeat, to point listeners at edges with room."""

    edges: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, beat: EdgeBeat, now: float) -> None:
        """Keep ``beat`` as this edge's latest, seen at ``now``."""
        self.edges[beat.node] = {"node": beat.node, "url": beat.url, "capacity": beat.capacity,
                                 "listeners": beat.listeners, "seen": now}

    def fresh(self, now: float) -> dict[str, dict[str, Any]]:
        """The edges heard from in the last STALE_S seconds, by node."""
        return {n: e for n, e in self.edges.items() if now - float(e["seen"]) <= STALE_S}


def _load(edge: dict[str, Any]) -> float:
    cap = edge.get("capacity") or 0
    listeners = float(edge.get("listeners") or 0)
    return listeners / cap if cap else listeners


def rank_edges(space: str, snap_edges: dict[str, EdgeSeen],
               registry: dict[str, dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Edges that can serve ``space``, least loaded first; full ones last."""
    merged: dict[str, dict[str, Any]] = {}
    for node, edge in registry.items():
        merged[node] = {"node": node, "url": edge.get("url"),
                        "listeners": int(edge.get("listeners") or 0),
                        "capacity": edge.get("capacity")}
    for node, seen in snap_edges.items():
        if now - seen.at > STALE_S:
            continue
        base = merged.setdefault(node, {"node": node, "url": seen.url,
                                        "listeners": seen.listeners,
                                        "capacity": seen.capacity})
        base["url"] = base["url"] or seen.url
    ranked = sorted(merged.values(), key=lambda e: (
        bool(e["capacity"]) and e["listeners"] >= e["capacity"], _load(e), e["node"]))
    for entry in ranked:
        root = str(entry["url"] or "").rstrip("/")
        entry["ws"] = f"{root}/ws/{space}"
        entry["ogg"] = f"{root}/listen/{space}.opus"
    return ranked
