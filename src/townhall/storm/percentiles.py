"""Percentiles and per-second time series of storm figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class TimeSeries:
    """Rows of figures, one per second, keyed by seconds since the start."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, t: float, **figures: Any) -> None:
        """Append one row at t seconds."""
        self.rows.append({"t": round(t, 3), **figures})

    def column(self, name: str) -> list[Any]:
        """One figure over time (None where missing)."""
        return [r.get(name) for r in self.rows]
