"""Which recordings are past their time, and which local copies to drop, with no I/O.

A finished recording is kept ``--recording-days`` after its Space ended
(``recording.expires_at``). The sweep (townhall.recording.routes) asks ``due`` which
Spaces' files to delete from the object store, then marks their ``recording.state``
``"expired"`` so that every node answers 410 and no later sweep picks them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EXPIRED = "expired"


def is_due(snap: dict[str, Any], now: float) -> bool:
    """Whether ``snap``'s recording is past its time and its files not yet deleted."""
    rec = snap.get("recording")
    return (isinstance(rec, dict) and rec.get("state") != EXPIRED
            and now >= float(rec.get("expires_at") or 0))


def due(snaps: Iterable[dict[str, Any]], now: float, limit: int = 100) -> list[str]:
    """Up to ``limit`` ids of Spaces whose recording the sweep must delete, soonest
    expired first."""
    found = sorted((float(s["recording"].get("expires_at") or 0), str(s["id"]))
                   for s in snaps if is_due(s, now))
    return [sid for _, sid in found[:limit]]


def keep_copy(snap: dict[str, Any] | None, now: float) -> bool:
    """Whether a node may keep its disk copy of a Space's recording or clips: not once
    the Space is gone, its recording deleted (or never made) or expired."""
    if snap is None:
        return False
    rec = snap.get("recording")
    if isinstance(rec, dict):
        return not is_due(snap, now) and rec.get("state") != EXPIRED
    return rec is True or snap.get("state") != "ended"
