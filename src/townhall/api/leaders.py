"""Keeping the raft leaders of the streams a failover needs on the NATS nodes the operator
named (``--nats-leader-nodes``, hosts that run no stage): the thin shell around
townhall.cluster.leaders. One api process at a time does it, holding a key in the
recorders bucket that lapses when it dies; every few seconds it reads the streams'
cluster info and asks any misplaced leader to step down in favour of a preferred node.
Off unless the setting names nodes (the embedded single server has no raft groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from fastapi import FastAPI
from prometheus_client import Counter, Gauge

from townhall.bus import subjects
from townhall.bus.bus import UNREACHABLE, CasConflict, LeaderMoveRefused
from townhall.bus.seam import Bus
from townhall.cluster.leaders import LeaderPlacement, Round, StreamCluster
from townhall.context import Context

log = logging.getLogger(__name__)

REFUSED: tuple[type[Exception], ...] = (LeaderMoveRefused, *UNREACHABLE)

# What a takeover needs at once: the lease (KV_stage_leases), the newest chunk (MEDIA)
# and, for the speaker's new offer, the Space (KV_spaces).
STREAMS = (f"KV_{subjects.LEASES_BUCKET}", subjects.MEDIA_STREAM, f"KV_{subjects.SPACES_BUCKET}")
LOCK_KEY = "leaders"  # in the recorders bucket (TTL 10 s), never a Space id: who steers
EVERY_S = 2.0         # one stream info per stream per round: cheap

MOVES = Counter("townhall_nats_leader_moves_total",
                "Stream leader step-downs asked for, to put the leader on a preferred node",
                ["stream"])
MISPLACED = Gauge("townhall_nats_leader_misplaced",
                  "1 while a watched stream's raft leader is on a node not preferred",
                  ["stream"])


class LeaderSteering:
    """One api's part in keeping leaders in place; ``round_once`` is one look."""

    def __init__(self, bus: Bus, node: str, preferred: Sequence[str],
                 streams: Sequence[str] = STREAMS) -> None:
        self.bus = bus
        self.node = node
        self.streams = tuple(streams)
        self.placement = LeaderPlacement(preferred=tuple(preferred))
        self._lock_rev: int | None = None
        self._stuck: frozenset[str] = frozenset()  # said once, not every round

    async def hold_lock(self) -> bool:
        """Take or renew the steering key; False while another api holds it."""
        mine = self.node.encode()
        if self._lock_rev is not None:
            try:
                self._lock_rev = await self.bus.kv_update(subjects.RECORDERS_BUCKET, LOCK_KEY,
                                                          mine, self._lock_rev)
                return True
            except CasConflict:
                self._lock_rev = None  # it lapsed and someone else took it, or we did
        try:
            self._lock_rev = await self.bus.kv_create(subjects.RECORDERS_BUCKET, LOCK_KEY, mine)
            return True
        except CasConflict:
            entry = await self.bus.kv_get(subjects.RECORDERS_BUCKET, LOCK_KEY)
            if entry is not None and entry.value == mine:  # ours from before a lost answer
                self._lock_rev = entry.revision
                return True
            return False

    async def release(self) -> None:
        """Let another api steer at once (a clean stop), rather than after the TTL."""
        if self._lock_rev is not None:
            with contextlib.suppress(Exception):
                await self.bus.kv_delete(subjects.RECORDERS_BUCKET, LOCK_KEY, self._lock_rev)
            self._lock_rev = None

    async def round_once(self, now: float) -> Round:
        """Read the streams' raft groups, ask the misplaced leaders to move."""
        clusters: list[StreamCluster] = []
        for stream in self.streams:
            try:
                c = await self.bus.stream_cluster(stream)
            except UNREACHABLE:
                continue  # its leader is being elected: the next round sees the new one
            if c is not None:
                clusters.append(c)
        decided = self.placement.decide(clusters, now)
        for c in clusters:
            MISPLACED.labels(c.stream).set(1 if c.stream in decided.misplaced else 0)
        for move in decided.moves:
            try:
                await self.bus.leader_stepdown(move.stream, move.target)
            except REFUSED as exc:
                log.warning("could not move the leader of %s from %s to %s: %r",
                            move.stream, move.source, move.target, exc)
                continue
            MOVES.labels(move.stream).inc()
            log.info("moved the leader of %s from %s to %s", move.stream, move.source,
                     move.target)
        for stream in sorted(decided.stuck - self._stuck):
            log.warning("the leader of %s is on a node not preferred, and no preferred "
                        "node is a current replica of it", stream)
        self._stuck = decided.stuck
        return decided

    async def run(self, every_s: float = EVERY_S) -> None:
        """Until cancelled: while holding the key, a round every ``every_s`` seconds."""
        while True:
            try:
                if await self.hold_lock():
                    await self.round_once(time.monotonic())
                else:
                    MISPLACED.clear()  # the api that steers reports it, not this one
            except asyncio.CancelledError:
                raise
            except UNREACHABLE:
                pass  # the recorders bucket electing, or this node cut off: next round
            except Exception:
                log.exception("leader placement round failed")
            await asyncio.sleep(every_s)


def install(app: FastAPI, ctx: Context) -> None:
    """Start steering with the api, when the operator named preferred leader nodes."""
    preferred = ctx.settings.nats_leader_nodes
    if not preferred:
        return
    steering = LeaderSteering(ctx.bus, ctx.settings.node_id, preferred)
    app.state.leader_steering = steering
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(steering.run(), name="leader-steering"))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await steering.release()

    ctx.on_start.append(start)
    ctx.on_stop.append(stop)
