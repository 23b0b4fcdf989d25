"""The stage's counters, with no I/O: mixer clock health and speakers' loss, summed per node.

Each owned Space keeps a ``Tally``; a speaker's Playout counters are folded into it when
the speaker leaves, so the totals a stage reports only ever grow (Prometheus counters).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from townhall.bus.messages import StageHeartbeat
from townhall.media.playout import Playout

LATE_S = 0.020  # a tick more than one frame late is a late frame


@dataclass
class Tally:
    """Cumulative counters of one Space run (or of a whole stage, summed)."""

    ticks: int = 0
    late_frames: int = 0
    fec_recovered: int = 0
    plc_frames: int = 0
    lost_packets: int = 0
    silent_ticks: int = 0   # ticks that only repeated the silence packet (media.silence)
    resent_packets: int = 0

    def add(self, other: Tally) -> None:
        """Add another tally's counts into this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def add_playout(self, playout: Playout) -> None:
        """Add one speaker's loss counters."""
        self.fec_recovered += playout.recovered
        self.plc_frames += playout.concealed
        self.lost_packets += playout.jitter.lost
        self.resent_packets += playout.resent


@dataclass
class ClockWatch:
    """Tick lateness: counts late ticks and keeps the worst lateness since the last read."""

    worst_s: float = 0.0

    def tick(self, tally: Tally, late_s: float) -> None:
        """A tick ran ``late_s`` seconds after its scheduled time (≤ 0 = on time)."""
        tally.ticks += 1
        if late_s > LATE_S:
            tally.late_frames += 1
        self.worst_s = max(self.worst_s, late_s)

    def take_worst(self) -> float:
        """The worst lateness since the previous call (seconds), and start a new window."""
        worst, self.worst_s = self.worst_s, 0.0
        return worst


def stage_report(node: str, spaces: list[str], speakers: int, total: Tally,
                 max_late_s: float, wall: float,
                 jitter_target_s: float = 0.0) -> StageHeartbeat:
    """The heartbeat a stage publishes on ``townhall.stages.<node>`` once a second."""
    return StageHeartbeat(node=node, spaces=sorted(spaces), speakers=speakers,
                          jitter_target_ms=round(jitter_target_s * 1000, 1),
                          ticks=total.ticks, late_frames=total.late_frames,
                          max_late_ms=round(max(0.0, max_late_s) * 1000, 3),
                          fec_recovered=total.fec_recovered, plc_frames=total.plc_frames,
                          lost_packets=total.lost_packets,
                          resent_packets=total.resent_packets, silent_ticks=total.silent_ticks,
                          at=wall)
