"""Which recordings are past their time, and which local copies to drop, with no I/O.

A finished recording is kept ``--recording-days`` after its Space ended
(``recording.expires_at``). The sweep (townhall.recording.routes) asks ``due`` which
Spaces' files to delete from the object store, then marks their ``recording.state``
``"expired"`` so that every node answers 410 and no later sweep picks them again.
"""

from __future__ import annotations

from collections.abc import Iterable

from townhall.room.snapshot import Space

EXPIRED = "expired"


def is_due(snap: Space, now: float) -> bool:
    """Whether ``snap``'s recording is past its time and its files not yet deleted."""
    rec = snap.finished
    return rec is not None and rec.state != EXPIRED and now >= rec.expires_at


def due(snaps: Iterable[Space], now: float, limit: int = 100) -> list[str]:
    """Up to ``limit`` ids of Spaces whose recording the sweep must delete, soonest
    expired first."""
    found = sorted((s.finished.expires_at, s.id) for s in snaps
                   if s.finished is not None and is_due(s, now))
    return [sid for _, sid in found[:limit]]


def keep_copy(snap: Space | None, now: float) -> bool:
    """Whether a node may keep its disk copy of a Space's recording or clips: not once
    the Space is gone, its recording deleted (or never made) or expired."""
    if snap is None:
        return False
    if snap.finished is not None:
        return not is_due(snap, now) and snap.finished.state != EXPIRED
    return snap.recording is True or snap.state != "ended"
