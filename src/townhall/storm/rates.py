"""Rates per viewer-minute from a storm's per-second rows (no I/O).

A row covers the interval (t - dt, t] and says how many viewers had the page open at its
end; "after the ramp" takes only rows wholly after the ramp, so page loads of the last
viewers to arrive do not count as steady state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def viewer_minutes(rows: Sequence[dict[str, Any]], after_t: float,
                   viewers_key: str = "viewers") -> float:
    """Viewer-minutes spent with the page open in rows wholly after after_t."""
    return sum(float(r.get(viewers_key) or 0) * float(r["dt"])
               for r in _after(rows, after_t)) / 60


def per_viewer_minute(rows: Sequence[dict[str, Any]], key: str, after_t: float,
                      viewers_key: str = "viewers") -> float | None:
    """Sum of `key` (a count per row) over rows after after_t, per viewer-minute.

    None when no viewer was there after after_t, or no row after it carries `key`.
    """
    picked = [r for r in _after(rows, after_t) if r.get(key) is not None]
    minutes = viewer_minutes(picked, after_t, viewers_key)
    if not picked or minutes <= 0:
        return None
    return sum(float(r[key]) for r in picked) / minutes


def _after(rows: Sequence[dict[str, Any]], after_t: float) -> list[dict[str, Any]]:
    return [r for r in rows if float(r["t"]) - float(r["dt"]) >= after_t]
