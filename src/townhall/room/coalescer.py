"""At most N snapshots a second per Space, latest wins, with no I/O (time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from townhall.room.snapshot import SNAPSHOTS_PER_SECOND


@dataclass
class Coalescer:
    """Decides when a Space's newest snapshot may go out.

    A snapshot offered less than ``1/rate`` after the last one sent waits; a newer
    offer replaces it, so however many changes come, clients see at most ``rate`` a
    second and always end on the newest. Older versions than the last sent are dropped.
    """

    rate: float = SNAPSHOTS_PER_SECOND
    _sent_at: dict[str, float] = field(default_factory=dict)
    _sent_version: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def interval(self) -> float:
        """Seconds at least between two snapshots of one Space."""
        return 1.0 / self.rate

    def offer(self, snap: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Returns the snapshot if it may be sent now; otherwise holds it."""
        space, version = snap["id"], int(snap["version"])
        if version <= self._sent_version.get(space, 0):
            return None
        held = self._pending.get(space)
        if held is not None and int(held["version"]) >= version:
            return None
        if now - self._sent_at.get(space, float("-inf")) >= self.interval:
            self._pending.pop(space, None)
            self._mark(space, version, now)
            return snap
        self._pending[space] = snap
        return None

    def due(self, now: float) -> list[dict[str, Any]]:
        """Held snapshots whose time has come."""
        out = []
        for space, snap in list(self._pending.items()):
            if now - self._sent_at.get(space, float("-inf")) >= self.interval:
                del self._pending[space]
                self._mark(space, int(snap["version"]), now)
                out.append(snap)
        return out

    def _mark(self, space: str, version: int, now: float) -> None:
        self._sent_at[space] = now
        self._sent_version[space] = version

    def forget(self, space: str) -> None:
        """Drop what is held of a Space (it was deleted)."""
        self._sent_at.pop(space, None)
        self._sent_version.pop(space, None)
        self._pending.pop(space, None)
