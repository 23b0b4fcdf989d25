"""Rates per viewer-minute from a storm's per-second rows (no I/O).

A row covers the interval (t - dt, t] and says how many viewers had the page open (and
how many were still loading it) at its end; "after the ramp" takes only rows wholly after
the ramp and after the last page load, so page loads do not count as steady state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def steady_from(rows: Sequence[dict[str, Any]], not_before: float,
                loading_key: str = "loading") -> float:
    """When steady state starts: the end of the first row at or after not_before from which
    on pages are open and none is loading any more (on a busy machine the last page loads
    outlast the ramp); not_before itself when that never happens."""
    start: float | None = None
    for r in rows:
        t = float(r["t"])
        if t < not_before:
            continue
        if r.get(loading_key) or not r.get("viewers"):
            start = None  # still loading, or every page already closed (the run's end)
        elif start is None:
            start = t
    return max(not_before, start) if start is not None else not_before


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
