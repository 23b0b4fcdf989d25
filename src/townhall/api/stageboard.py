"""Stage heartbeats on the api's /metrics: the stage process serves no HTTP of its own.

Every stage publishes a report on ``townhall.stages.<node>`` once a second (see
townhall.stage.role); each api process keeps the latest per node (``StageBoard``, no I/O)
and exports them through a custom Prometheus collector, labelled by node. A stage not
heard from for ``STALE_S`` is dropped. WHIP (townhall.api.whip) reads the board too: an
offer to a stage silent for ``SILENT_S`` is given up, and a Space's owner can be told from
the heartbeats while the leases bucket does not answer (a raft election).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from townhall.bus import subjects
from townhall.bus.bus import Message
from townhall.bus.messages import MessageError, StageHeartbeat, decode_heartbeat
from townhall.context import Context

log = logging.getLogger(__name__)
STALE_S = 10.0
SILENT_S = 2.0  # two heartbeats missed: the stage is dead, cut off, or its NATS client moving

# (report key, metric name without _total, help)
COUNTERS = (
    ("ticks", "townhall_stage_ticks", "Mixer ticks run by the stage since it started"),
    ("late_frames", "townhall_stage_late_frames",
     "Mixer ticks that ran more than 20 ms late"),
    ("fec_recovered", "townhall_stage_fec_recovered",
     "Lost speaker frames rebuilt from Opus in-band FEC"),
    ("plc_frames", "townhall_stage_plc_frames",
     "Speaker frames filled by Opus packet loss concealment"),
    ("lost_packets", "townhall_stage_lost_packets",
     "Speaker RTP packets missing when their slot played"),
    ("silent_ticks", "townhall_stage_silent_ticks",
     "Mixer ticks of silent Spaces that repeated the silence packet: no mix, no encode"),
    ("resent_packets", "townhall_stage_resent_packets",
     "Lost speaker RTP packets resent on NACK in time to play"),
)


@dataclass
class StageBoard:
    """The latest report of every stage, with no I/O: time is passed in."""

    stale_s: float = STALE_S
    reports: dict[str, tuple[StageHeartbeat, float]] = field(default_factory=dict)
    listening_since: float | None = None  # when the subscription began (None: not yet)

    def update(self, report: StageHeartbeat, now: float) -> None:
        """A heartbeat received at monotonic ``now``."""
        self.reports[report.node] = (report, now)

    def silent_for(self, node: str, now: float) -> float:
        """Seconds since ``node``'s last heartbeat; for a node never heard, since the board
        began listening (0 before that: a board not listening can tell nothing)."""
        if node in self.reports:
            return now - self.reports[node][1]
        return 0.0 if self.listening_since is None else now - self.listening_since

    def mixer(self, space: str, now: float, within: float = SILENT_S) -> str | None:
        """The stage whose latest heartbeat, at most ``within`` s old, lists ``space`` (the
        most recently heard if two do, as for a moment in a takeover); None if none."""
        heard = [(at, r.node) for r, at in self.reports.values()
                 if now - at <= within and space in r.spaces]
        return max(heard)[1] if heard else None

    def current(self, now: float) -> list[tuple[StageHeartbeat, float]]:
        """(report, age in seconds) of every stage heard from within ``stale_s``."""
        for node in [n for n, (_, at) in self.reports.items() if now - at > self.stale_s]:
            del self.reports[node]
        return [(r, now - at) for r, at in sorted(self.reports.values(),
                                                  key=lambda x: x[0].node)]


Reading = Callable[[StageHeartbeat, float], float]


def families(current: list[tuple[StageHeartbeat, float]]) -> list[Metric]:
    """Prometheus metric families for the stages' latest reports."""
    out: list[Metric] = []
    for key, name, doc in COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=["node"])
        for report, _ in current:
            counter.add_metric([report.node], float(getattr(report, key)))
        out.append(counter)
    gauges: tuple[tuple[str, str, Reading], ...] = (
        ("townhall_stage_speakers", "Speakers connected to the stage",
         lambda r, _: float(r.speakers)),
        ("townhall_stage_spaces", "Live Spaces the stage owns",
         lambda r, _: float(len(r.spaces))),
        ("townhall_stage_max_late_ms", "Worst mixer tick lateness in the stage's last second",
         lambda r, _: r.max_late_ms),
        ("townhall_stage_jitter_target_ms",
         "Deepest speaker jitter buffer target on the stage right now",
         lambda r, _: r.jitter_target_ms),
        ("townhall_stage_max_spaces", "Live Spaces the stage takes at most (0: no limit)",
         lambda r, _: float(r.max_spaces)),
        ("townhall_stage_cpu", "Share of one core the stage process used lately",
         lambda r, _: r.cpu),
        ("townhall_stage_draining", "1 while the stage is stopping and hands its Spaces over",
         lambda r, _: float(r.draining)),
        ("townhall_stage_report_age_seconds", "Seconds since this stage's last heartbeat",
         lambda _, age: float(age)),
    )
    for name, doc, value in gauges:
        gauge = GaugeMetricFamily(name, doc, labels=["node"])
        for report, age in current:
            gauge.add_metric([report.node], value(report, age))
        out.append(gauge)
    return out


class StageCollector(Collector):
    """Reads the board at scrape time."""

    def __init__(self, board: StageBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        """The stages' latest reports, at scrape time."""
        yield from families(self.board.current(time.monotonic()))

    def describe(self) -> Iterator[Metric]:
        """The families this collector exports, without samples."""
        yield from families([])


# One board per process: /metrics reads the process-wide registry.
BOARD = StageBoard()
_registered = False


def install(app: FastAPI, ctx: Context) -> None:
    """Follow ``townhall.stages.*`` and export the reports on this process's /metrics."""
    global _registered
    if not _registered:
        REGISTRY.register(StageCollector(BOARD))
        _registered = True

    async def on_report(msg: Message) -> None:
        with contextlib.suppress(MessageError):  # not a heartbeat: not counted
            BOARD.update(decode_heartbeat(msg.data), time.monotonic())

    async def start() -> None:
        await ctx.bus.subscribe(subjects.STAGES, on_report)
        if BOARD.listening_since is None:
            BOARD.listening_since = time.monotonic()

    ctx.on_start.append(start)
    app.state.stage_board = BOARD
