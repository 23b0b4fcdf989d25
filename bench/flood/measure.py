"""What the flood bench measures, with no I/O: listeners' chunk arrivals and the stage's
heartbeats, cut into windows."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from townhall.bus.bus import Message
from townhall.media.chunk import Chunk


@dataclass
class Ear:
    """One listener's chunks: arrival times and sequence numbers."""

    heard: list[tuple[float, int]] = field(default_factory=list)

    def on(self, chunk: Chunk, _wall: float) -> None:
        self.heard.append((time.monotonic(), chunk.seq))

    def window(self, t0: float, t1: float) -> tuple[float, int]:
        """(worst gap between chunks in ms, missing sequence numbers) within [t0, t1]."""
        got = [(t, s) for t, s in self.heard if t0 <= t <= t1]
        if len(got) < 2:
            return (t1 - t0) * 1000, 0
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
        edge = max(got[0][0] - t0, t1 - got[-1][0])  # silence at either end counts too
        missing = sum(max(0, b[1] - a[1] - 1) for a, b in itertools.pairwise(got))
        return max([*gaps, edge]) * 1000, missing


@dataclass
class Heartbeats:
    """The stage's reports: (arrival, report)."""

    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    async def on(self, msg: Message) -> None:
        with contextlib.suppress(ValueError):
            self.seen.append((time.monotonic(), json.loads(msg.data)))

    def window(self, t0: float, t1: float) -> tuple[int, int, float]:
        """(ticks, late ticks, worst lateness ms) of the reports that arrived in [t0, t1]
        (counters are cumulative: last minus the one just before the window)."""
        before = [r for t, r in self.seen if t < t0]
        inside = [r for t, r in self.seen if t0 <= t <= t1]
        if not before or not inside:
            return 0, 0, float("nan")
        a, b = before[-1], inside[-1]
        return (int(b["ticks"]) - int(a["ticks"]), int(b["late_frames"]) - int(a["late_frames"]),
                max(float(r.get("max_late_ms", 0.0)) for r in inside))
