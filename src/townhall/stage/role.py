"""The stage role's shell: leases, the mixer clock per Space, WHIP sessions over NATS.

Every live Space is owned by exactly one stage through a lease in KV ``stage_leases``
(TTL 5 s, renewed every second). The owner runs the Space's clock: every 20 ms it pulls
one frame from each speaker's buffer, mixes (program + mix-minus), encodes the program
once, and every 5 frames publishes a chunk on ``townhall.<id>.media`` — silence included,
so listeners' streams never stop while nobody talks. A stage that finds a live Space
without a lease (its owner died) takes it and continues the sequence numbers from the
last chunk JetStream kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge

from townhall.bus import Bus, CasConflict, subjects
from townhall.bus.bus import Message
from townhall.context import Context
from townhall.media.chunk import Chunk
from townhall.media.levels import LevelMeter
from townhall.media.mixer import mix
from townhall.media.opus import OpusEncoder
from townhall.media.packager import Packager
from townhall.stage.ingest import SpeakerSession

log = logging.getLogger(__name__)
FRAME_S = 0.020
RENEW_S = 1.0

OWNED = Gauge("townhall_stage_spaces", "Live Spaces this stage owns")
SPEAKERS = Gauge("townhall_stage_speakers", "Speakers connected to this stage")
CHUNKS = Counter("townhall_stage_chunks_total", "Program chunks published")
LATE = Counter("townhall_stage_late_frames_total", "Mixer ticks that ran late by > 20 ms")
TAKEOVERS = Counter("townhall_stage_takeovers_total", "Spaces taken over from another stage")


def whip_subject(space: str) -> str:
    return f"townhall.stage.whip.{space}"


class SpaceRun:
    """One owned Space: its speakers, its clock, its encoder and packager."""

    def __init__(self, bus: Bus, space: str, snap: dict[str, Any], packager: Packager,
                 bitrate: int = 32_000) -> None:
        self.bus = bus
        self.space = space
        self.sessions: dict[str, SpeakerSession] = {}
        self.packager = packager
        self.encoder = OpusEncoder(bitrate)
        self.stage_ids: set[str] = set()
        self.muted: set[str] = set()
        self.apply(snap)
        self.task: asyncio.Task[None] | None = None
        self.meter = LevelMeter(interval_s=0.25)  # ≤ 4 level messages a second

    def apply(self, snap: dict[str, Any]) -> list[SpeakerSession]:
        """A newer snapshot: who is on stage and muted; returns sessions to close."""
        self.stage_ids = {p["id"] for p in snap.get("stage", [])}
        self.muted = {p["id"] for p in snap.get("stage", []) if p.get("muted")}
        return [s for s in self.sessions.values() if s.identity not in self.stage_ids]

    async def run(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            delay = start + tick * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # the loop stalled for a second: re-anchor, don't burst
                LATE.inc()
                start, tick = time.monotonic(), 0
            elif delay < -FRAME_S:
                LATE.inc()
            for subject, data in self.step(time.monotonic(), time.time()):
                await self.bus.publish(subject, data)

    def step(self, now: float, wall: float) -> list[tuple[str, bytes]]:
        """One 20 ms frame at monotonic ``now``: mix, feed returns, encode; what to publish."""
        out: list[tuple[str, bytes]] = []
        sessions = list(self.sessions.values())
        frames = {s.identity: s.pull() for s in sessions}
        result = mix(frames, self.muted)
        for s in sessions:
            s.returns.feed(result.returns[s.identity])
            self.meter.add(s.identity, None if s.identity in self.muted
                           else frames.get(s.identity))
        packet = self.encoder.encode(result.program)
        chunk = self.packager.add(packet, int(wall * 1e6))
        if chunk is not None:
            out.append((subjects.media(self.space), chunk.encode()))
            CHUNKS.inc()
        report = self.meter.report(self.space, {s.identity for s in sessions}, now, wall)
        if report is not None:
            out.append((subjects.levels(self.space), json.dumps(report).encode()))
        return out

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            await s.close()
        self.sessions.clear()


class Stage:
    """All Spaces this process owns."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bus = ctx.bus
        self.node = ctx.settings.node_id
        self.runs: dict[str, SpaceRun] = {}
        self.leases: dict[str, int] = {}
        self._reapers: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        await self.bus.subscribe("townhall.*.state", self._on_state)
        await self.bus.subscribe("townhall.*.control", self._on_control)
        await self.bus.subscribe("townhall.stage.whip.*", self._on_whip)

    async def _on_state(self, msg: Message) -> None:
        with contextlib.suppress(ValueError):
            snap = json.loads(msg.data)
            space = snap["id"]
            if space in self.runs:
                if snap.get("state") != "live":
                    await self.release(space)
                    return
                for s in self.runs[space].apply(snap):
                    await self._drop(space, s)
            elif snap.get("state") == "live":
                await self.acquire(space, snap)

    async def _on_control(self, msg: Message) -> None:
        space = msg.subject.split(".")[1]
        run = self.runs.get(space)
        if run is None:
            return
        with contextlib.suppress(ValueError):
            cmd = json.loads(msg.data)
            if cmd.get("type") == "kick":
                for s in [s for s in run.sessions.values() if s.identity == cmd["identity"]]:
                    await self._drop(space, s)
            elif cmd.get("type") == "ended":
                await self.release(space)

    async def _drop(self, space: str, session: SpeakerSession) -> None:
        run = self.runs.get(space)
        if run is not None:
            run.sessions.pop(session.id, None)
        await session.close()
        SPEAKERS.set(sum(len(r.sessions) for r in self.runs.values()))

    async def _on_whip(self, msg: Message) -> None:
        space = msg.subject.rsplit(".", 1)[1]
        run = self.runs.get(space)
        if run is None or not msg.reply:
            return  # not ours: the owner answers
        try:
            req = json.loads(msg.data)
        except ValueError:
            return
        if req.get("op") == "leave":
            found = run.sessions.get(str(req.get("session")))
            if found is None or found.identity != req.get("identity"):
                reply = {"status": 404, "detail": "no such WHIP session"}
            else:
                await self._drop(space, found)
                reply = {"status": 200}
            await self.bus.respond(msg.reply, json.dumps(reply).encode())
            return
        identity = str(req.get("identity"))
        if identity not in run.stage_ids:
            reply = {"status": 403, "detail": "not on this Space's stage"}
        else:
            for old in [s for s in run.sessions.values() if s.identity == identity]:
                await self._drop(space, old)  # a reconnect replaces the old session
            session = SpeakerSession(identity, str(req.get("name", identity)))
            try:
                answer = await asyncio.wait_for(session.answer(str(req["sdp"])), 10)
            except Exception as exc:
                await session.close()
                reply = {"status": 422, "detail": f"cannot use this offer: {exc}"}
            else:
                run.sessions[session.id] = session
                SPEAKERS.set(sum(len(r.sessions) for r in self.runs.values()))
                reaper = asyncio.ensure_future(self._reap(space, session))
                self._reapers.add(reaper)
                reaper.add_done_callback(self._reapers.discard)
                reply = {"status": 201, "session": session.id, "sdp": answer}
        await self.bus.respond(msg.reply, json.dumps(reply).encode())

    async def _reap(self, space: str, session: SpeakerSession) -> None:
        await session.closed.wait()
        run = self.runs.get(space)
        if run is not None:
            run.sessions.pop(session.id, None)

    async def acquire(self, space: str, snap: dict[str, Any]) -> bool:
        if space in self.runs:
            return True
        try:
            rev = await self.bus.kv_create(subjects.LEASES_BUCKET, space, self.node.encode())
        except CasConflict:
            return False
        last_msg = await self.bus.last_message(subjects.MEDIA_STREAM, subjects.media(space))
        last = Chunk.decode(last_msg.data) if last_msg else None
        if last is not None:
            TAKEOVERS.inc()
        self.leases[space] = rev
        run = SpaceRun(self.bus, space, snap, Packager.after(last))
        run.task = asyncio.ensure_future(run.run())
        self.runs[space] = run
        OWNED.set(len(self.runs))
        log.info("stage owns space", extra={"space": space,
                                            "from_seq": run.packager.next_seq})
        return True

    async def release(self, space: str) -> None:
        run = self.runs.pop(space, None)
        self.leases.pop(space, None)
        if run is None:
            return
        if run.task:
            run.task.cancel()
        await run.close_all()
        with contextlib.suppress(Exception):
            await self.bus.kv_delete(subjects.LEASES_BUCKET, space)
        OWNED.set(len(self.runs))

    async def tend(self) -> None:
        """Once a second: renew our leases, and take live Spaces nobody holds."""
        for space, rev in list(self.leases.items()):
            try:
                self.leases[space] = await self.bus.kv_update(
                    subjects.LEASES_BUCKET, space, self.node.encode(), rev)
            except CasConflict:
                log.warning("lost the lease", extra={"space": space})
                run = self.runs.pop(space, None)
                self.leases.pop(space, None)
                if run is not None and run.task:
                    run.task.cancel()
                    await run.close_all()
        for key in await self.bus.kv_keys(subjects.SPACES_BUCKET):
            if key in self.runs:
                continue
            entry = await self.bus.kv_get(subjects.SPACES_BUCKET, key)
            if entry is None:
                continue
            snap = json.loads(entry.value)
            if snap.get("state") == "live":
                await self.acquire(key, snap)

    async def stop(self) -> None:
        for space in list(self.runs):
            run = self.runs.pop(space)
            if run.task:
                run.task.cancel()
            await run.close_all()
            # Hand over at once rather than after the TTL.
            with contextlib.suppress(Exception):
                await self.bus.kv_delete(subjects.LEASES_BUCKET, space)


async def run(ctx: Context) -> None:
    """The stage role: runs until cancelled."""
    stage = Stage(ctx)
    await stage.start()
    try:
        while True:
            try:
                await stage.tend()
            except Exception:
                log.exception("stage upkeep failed")
            await asyncio.sleep(RENEW_S)
    finally:
        await stage.stop()
