"""The stage role's shell: leases, the mixer clock per Space, WHIP sessions over NATS.

Every live Space is owned by exactly one stage through a lease in KV ``stage_leases``
(TTL ``LEASE_TTL_S``, renewed every second). The owner steps the Space on the process's
one 20 ms ticker (stage.ticker): every frame it pulls one frame from each speaker's
buffer, mixes (program + mix-minus), encodes the program once, and every 5 frames
publishes a chunk on ``townhall.<id>.media`` — silence included, so listeners' streams
never stop while nobody talks; while nothing audible comes in, the silence gate
(media.silence) repeats the encoder's settled silence packet instead of mixing and
encoding. A stage that finds a live Space without a lease (new, handed back, or its
owner died) takes it after a wait that grows with its load relative to the other stages
(townhall.stage.placement), and continues the sequence numbers from the last chunk
JetStream kept. Stages learn which Spaces are live from a watch of ``spaces`` and who holds
which from a watch of ``stage_leases``: nothing reads the buckets key by key.

Two stages never both publish a Space's chunks for long: chunks go through JetStream
fenced on the subject's last stored sequence (``Bus.publish_fenced``), so once a new owner
has stored a chunk every publish of the deposed one is refused and it stops that Space at
once; and a stage stops a Space the moment a renewal finds the lease taken, or when it
could not renew for as long as the lease lives (docs/stage.md, "Takeover").

Once a second the stage publishes its heartbeat on ``townhall.stages.<node>`` (Spaces,
speakers, budget, CPU, ticks, late frames, FEC/PLC/loss counters); the api processes export
it on their /metrics (townhall.api.stageboard), since the stage process serves no HTTP,
and the other stages read its budget and load from it. On SIGTERM it hands every Space
over at once (``Stage.stop``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from townhall.bus import Bus, CasConflict, subjects
from townhall.bus.bus import Change, Fenced, Message, Subscription, Watch
from townhall.bus.messages import (
    Kick,
    Levels,
    MessageError,
    SpeakerLink,
    StageHeartbeat,
    WhipLeave,
    WhipReply,
    WhipRequest,
    decode_control,
    decode_heartbeat,
    decode_whip_request,
    decoded,
    encode,
)
from townhall.context import Context
from townhall.media.chunk import Chunk
from townhall.media.levels import LevelMeter
from townhall.media.mixer import mix
from townhall.media.opus import OpusEncoder
from townhall.media.packager import Packager
from townhall.media.silence import SILENT_FRAME, Plan, SilenceGate
from townhall.problems import Problem
from townhall.room.snapshot import SnapshotError, Space
from townhall.room.snapshot import decode as decode_space
from townhall.sdp import check_sdp
from townhall.stage.counters import ClockWatch, Tally, stage_report
from townhall.stage.ingest import SpeakerSession
from townhall.stage.negotiation import NEGOTIATION_TIMEOUT_S, NegotiationGate
from townhall.stage.numbering import Ahead, RivalReports, first_number
from townhall.stage.placement import Capacity, CpuMeter, Placement
from townhall.stage.ticker import ticker
from townhall.stage.upkeep import Upkeep

log = logging.getLogger(__name__)
FRAME_S = 0.020
RENEW_S = 1.0
REPORT_S = 1.0
ACK_TIMEOUT_S = 1.0     # a chunk's store ack; the next chunk is due 0.1 s after it
ACK_LATE_S = 0.25       # an ack this late: the chunks coming due go out without waiting
RENEW_TIMEOUT_S = 1.0   # one lease renewal; tending must not hang on a cut-off node
QUEUED_CHUNKS = 50      # 5 s of chunks waiting for acks; older ones are dropped
ROSTER_WAIT_S = 1.0     # an offer waits at most this for the state message it was checked on
UNFENCED_KEPT = 600     # 60 s of chunks sent unfenced while the stream was away
CLAIM_TRIES = 5         # a takeover's first chunk racing the old owner's last ones
CLAIM_WAIT_S = 5.0      # ...or waiting for the stream to answer (a leader election)
BEGIN_WAIT_S = 10.0     # a new owner waits this long for MEDIA's newest chunk, lease kept
BEGIN_RETRY_S = 0.25
LAPSE_CHECK_S = 0.25    # how often to look for leases that lapsed (upkeep: once a second)
MIXING_HEARD_S = 1.5    # a lapsed lease whose holder said this recently it mixes: not taken
UPKEEP = Upkeep(subjects.LEASE_TTL_S, MIXING_HEARD_S)
PARALLEL = 32           # lease writes in flight at once (renewals, the hand-over on stop)
CLOSE_TIMEOUT_S = 3.0   # closing speakers' sessions when the stage stops


def ack_late(waited_s: float, late_s: float = ACK_LATE_S) -> bool:
    """Whether a chunk's store ack, unanswered for ``waited_s``, is late enough that the
    chunks coming due go out without it. Before that, a due chunk waits: an ack a little
    slow (a loaded machine) must not cost the stream a chunk (see ``SpaceRun._acked``)."""
    return waited_s >= late_s


class SpaceRun:
    """One owned Space: its speakers, its clock, its encoder and packager."""

    def __init__(self, bus: Bus, space: str, snap: Space, packager: Packager,
                 bitrate: int = 32_000, *, stored_seq: int = 0,
                 on_fenced: Callable[[str], None] | None = None,
                 rivals: RivalReports | None = None,
                 on_ahead: Callable[[str], None] | None = None) -> None:
        self.bus = bus
        self.space = space
        # The stream sequence of the Space's newest stored chunk: every chunk is published
        # only on top of it, so a second stage's chunks cannot both be stored.
        self.stored_seq = stored_seq
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue(QUEUED_CHUNKS)
        self.on_fenced = on_fenced
        self.rivals = rivals      # the old owner's last report of unstored chunks
        self.on_ahead = on_ahead  # we just published a chunk the stream may not hold
        self.fenced = False
        self.unacked = 0  # chunks sent without a store ack (the stream did not answer)
        self.published: Chunk | None = None  # our newest chunk on the subject, stored or not
        self.sending: Chunk | None = None    # handed to NATS, no answer yet
        self.kept = -1           # the seq of our newest chunk the stream acked
        self.stored_at = 0.0     # monotonic time of that ack: we still publish fenced
        self.claimed = False  # a chunk of ours is stored: later refusals mean deposed
        self.shift = (0, 0)   # (seq, pts) added to the packager's numbers after a claim
        # Chunks sent unfenced while the stream did not answer (see _resync), to recognise
        # them as ours if the stream stored them meanwhile.
        self.unfenced: collections.deque[bytes] = collections.deque(maxlen=UNFENCED_KEPT)
        self._side: set[asyncio.Future[object]] = set()  # publishes sent while an ack was late
        self.sessions: dict[str, SpeakerSession] = {}
        self.packager = packager
        self.encoder = OpusEncoder(bitrate)
        self.stage_ids: set[str] = set()
        self.muted: set[str] = set()
        self.version = 0  # of the newest snapshot applied
        self.applied = asyncio.Event()  # set by each snapshot applied
        self.apply(snap)
        self.task: asyncio.Task[None] | None = None
        self.meter = LevelMeter(interval_s=0.25)  # ≤ 4 level messages a second
        self.tally = Tally()   # ticks, late frames, and speakers who left
        self.clock = ClockWatch()
        self.gate = SilenceGate()

    def remove(self, session_id: str) -> SpeakerSession | None:
        """Forget a session, folding its loss counters into this run's tally."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self.tally.add_playout(session.playout)
        return session

    def counts(self) -> Tally:
        """This run's counters so far, speakers still connected included."""
        total = Tally(silent_ticks=self.gate.repeated)
        total.add(self.tally)
        for s in self.sessions.values():
            total.add_playout(s.playout)
        return total

    def apply(self, snap: Space) -> list[SpeakerSession]:
        """A newer snapshot: who is on stage and muted; returns sessions to close. An older
        one (state messages are plain NATS: one may overtake another) changes nothing."""
        if snap.version < self.version:
            return []
        self.version = snap.version
        self.applied.set()
        self.stage_ids = {p.id for p in snap.stage}
        self.muted = {p.id for p in snap.stage if p.muted}
        return [s for s in self.sessions.values() if s.identity not in self.stage_ids]

    async def roster_at(self, version: int, bound_s: float) -> None:
        """Wait until a snapshot of at least ``version`` was applied, at most ``bound_s``.

        The api authorizes an offer on the stored Space and the stage learns of it from the
        state message that follows the write: a speaker who offers the moment the host
        approved them can reach the stage first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound_s):
                while self.version < version:
                    self.applied.clear()
                    await self.applied.wait()

    async def run(self) -> None:
        """Mix this Space on the process's shared 20 ms ticker until cancelled or fenced."""
        sender = asyncio.ensure_future(self.send_chunks())
        clock = ticker()
        try:
            await clock.join(self)
        finally:
            clock.leave(self)
            sender.cancel()

    def tick(self, late_s: float) -> list[tuple[str, bytes]]:
        """One frame on the ticker, ``late_s`` after it was due: chunks are queued for
        ``send_chunks``; what else to publish (levels) is returned."""
        if self.fenced:
            return []
        self.clock.tick(self.tally, late_s)  # sleep overshoot counts: listeners get it
        out = self.step(time.monotonic(), time.time())
        media = subjects.media(self.space)
        rest = []
        for subject, data in out:
            if subject == media:
                if self.chunks.full():  # acks stalled: the oldest chunk is stale anyway
                    self.chunks.get_nowait()
                self.chunks.put_nowait(data)
            else:
                rest.append((subject, data))
        return rest

    async def publish(self, subject: str, data: bytes) -> None:
        """A message of this Space's tick (levels), published by the ticker."""
        await self.bus.publish(subject, data)

    async def send_chunks(self) -> None:
        """Publish queued chunks one at a time, each fenced on the one stored before it.

        The first chunk claims the Space: numbered after the newest stored chunk (read just
        before, not when the lease was taken: an old owner may still be storing) and past
        anything the old owner reported publishing unstored (stage.numbering), and sent
        fenced on it, again if the old owner got one more in; from then on the old owner's
        publishes are the refused ones. Any later refusal means another stage claimed it
        from us: stop at once (the lease check would notice only later). No ack: the chunk
        may or may not be stored; ask the stream which chunk is its newest before sending
        the next."""
        subject = subjects.media(self.space)
        while not self.fenced:
            chunk = self._shifted(await self.chunks.get())
            if not self.claimed:  # read the newest stored chunk just before, not at lease
                if not await self._claim(subject, chunk):
                    self._fence()
                    return
                continue
            data = chunk.encode()
            self.sending = chunk
            ours = [data]  # chunks fenced on the same sequence: the stream may hold one
            try:
                self.stored_seq = await self._acked(subject, data, ours)
                self._sent(chunk, stored=True)
                continue
            except Fenced:
                self._fence()
                return
            except Exception:  # no ack: the stream is electing a leader, or we are cut off
                self.unacked += 1
                self._sent(chunk, stored=False)
            await self._resync(subject, ours)

    async def _acked(self, subject: str, data: bytes, ours: list[bytes]) -> int:
        """Publish one chunk fenced on the newest stored one and return its ack's sequence.

        While the ack is late (a healed NATS node rejoining: the stream's leader is busy
        for about a second), the chunks coming due are not held back behind it: each goes
        out at its pace, fenced on the same sequence (``ack_late``), so listeners, who get
        every publish on the plain subject, hear no pause. The fence is unchanged: the
        stream stores at most the first of them, whose answer alone decides (a refusal
        means deposed); the others are refused or unanswered, heard but not stored, and
        reported unstored (``ahead``) like the chunks sent while the stream is away."""
        fence = self.stored_seq
        ack = asyncio.ensure_future(
            self.bus.publish_fenced(subject, data, fence, timeout=ACK_TIMEOUT_S))
        began = time.monotonic()
        due: asyncio.Future[bytes] | None = None
        try:
            while not ack.done():
                waited = time.monotonic() - began
                if not ack_late(waited):
                    await asyncio.wait({ack}, timeout=ACK_LATE_S - waited)
                    continue
                due = asyncio.ensure_future(self.chunks.get())
                await asyncio.wait({ack, due}, return_when=asyncio.FIRST_COMPLETED)
                if not due.done():
                    break
                extra = self._shifted(due.result())
                due = None
                extra_data = extra.encode()
                ours.append(extra_data)
                self._sent(extra, stored=False)
                self._later(self.bus.publish_fenced(subject, extra_data, fence,
                                                    timeout=ACK_TIMEOUT_S))
            return await ack
        finally:
            if due is not None and not due.done():
                due.cancel()
            if not ack.done():
                ack.cancel()  # we were cancelled: the Space stops

    def _later(self, job: Coroutine[Any, Any, object]) -> None:
        """Run a publish whose answer does not matter (kept referenced until done)."""
        task = asyncio.ensure_future(job)
        self._side.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Future[object]) -> None:
        self._side.discard(task)
        if not task.cancelled():
            task.exception()  # refused or unanswered, as expected: not logged

    def ahead(self) -> Ahead | None:
        """Our newest published chunk while the stream may not hold it (for the heartbeat:
        a stage taking the Space over numbers past it), else None."""
        p = self.published
        if p is None or p.seq <= self.kept:
            return None
        return Ahead(p.seq, p.pts, p.sent_us)

    def gave_up(self) -> Ahead | None:
        """When this run stops: the newest chunk it published or had in flight that the
        stream may not hold, final (should we take the Space again, we number past it,
        and only past it)."""
        out = [c for c in (self.published, self.sending) if c is not None and c.seq > self.kept]
        if not out:
            return None
        last = max(out, key=lambda c: c.seq)
        return Ahead(last.seq, last.pts, last.sent_us, final=True)

    def _sent(self, chunk: Chunk, *, stored: bool) -> None:
        was_ahead = self.ahead() is not None
        if self.published is None or chunk.seq > self.published.seq:
            self.published = chunk  # an ack can come after later chunks went out (_acked)
        if self.sending is chunk:
            self.sending = None
        if stored:
            self.kept, self.stored_at = chunk.seq, time.monotonic()
        elif not was_ahead and self.on_ahead is not None:
            self.on_ahead(self.space)  # say so now, not at the next heartbeat

    def _shifted(self, raw: bytes) -> Chunk:
        chunk = Chunk.decode(raw)
        if self.shift != (0, 0):
            chunk = replace(chunk, seq=chunk.seq + self.shift[0], pts=chunk.pts + self.shift[1])
        return chunk

    async def _claim(self, subject: str, chunk: Chunk) -> bool:
        """Number our first chunk past the newest stored one and past what the old owner
        reported publishing unstored, and store it; a few tries if the old owner gets one
        more in, and while the stream does not answer (a leader election) for a while."""
        # The old owner said lately it mixes the Space: alive, a chunk of its own may be in
        # flight (refused by the stream, but heard): our first number must not be its.
        contested = self.rivals is not None and self.rivals.mixed_by(
            self.space, time.monotonic(), MIXING_HEARD_S) is not None
        deadline = time.monotonic() + CLAIM_WAIT_S
        tries = 0
        while tries < CLAIM_TRIES:
            moved, sending = chunk, False
            try:
                last = await asyncio.wait_for(
                    self.bus.last_message(subjects.MEDIA_STREAM, subject), ACK_TIMEOUT_S)
                prev = Chunk.decode(last.data) if last is not None else None
                ahead = self.rivals.floor(self.space) if self.rivals is not None else None
                number = first_number(prev, ahead, int(time.time() * 1e6),
                                      chunk_samples=chunk.duration_samples, contested=contested)
                if number is not None:
                    moved = replace(chunk, seq=number[0], pts=number[1])
                sending, self.sending = True, moved
                self.stored_seq = await self.bus.publish_fenced(
                    subject, moved.encode(), last.seq if last else 0, timeout=ACK_TIMEOUT_S)
            except Fenced:
                tries += 1
                contested = True
                continue
            except Exception:
                if sending:
                    self._sent(moved, stored=False)  # it may have reached listeners
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(FRAME_S * 5)
                continue
            self.shift = (self.shift[0] + moved.seq - chunk.seq,
                          self.shift[1] + moved.pts - chunk.pts)
            self._sent(moved, stored=True)
            self.claimed = True
            if self.rivals is not None:
                self.rivals.forget(self.space)  # our stored chunks are past it now
            return True
        return False

    async def _resync(self, subject: str, sent: list[bytes]) -> None:
        """After a missing ack: learn the newest stored chunk, or give the Space up."""
        while not self.fenced:
            try:
                last = await asyncio.wait_for(
                    self.bus.last_message(subjects.MEDIA_STREAM, subject), ACK_TIMEOUT_S)
            except Exception:
                # The stream is electing a leader (a NATS node died) or unreachable: keep the
                # listeners fed on the plain subject meanwhile, as before chunks were fenced
                # (a node's loss must lose no audio); the heartbeat reports how far we got
                # (ahead), so a stage taking the Space over numbers past it. A stage cut off
                # from NATS reaches no one this way, and stops at the next lease check.
                while not self.chunks.empty():
                    chunk = self._shifted(self.chunks.get_nowait())
                    data = chunk.encode()
                    self.unfenced.append(data)
                    self._sent(chunk, stored=False)
                    with contextlib.suppress(Exception):
                        await self.bus.publish(subject, data)
                await asyncio.sleep(FRAME_S * 5)
                continue
            newest = last.seq if last is not None else 0
            if last is not None and (last.data in sent or last.data in self.unfenced):
                self.stored_seq = newest  # ours after all (the stream took it meanwhile)
                self.unfenced.clear()
            elif newest != self.stored_seq:
                self._fence()  # not ours and not the one before: another stage wrote
            return

    def _fence(self) -> None:
        self.fenced = True
        if self.task is not None:
            self.task.cancel()
        if self.on_fenced is not None:
            self.on_fenced(self.space)

    def step(self, now: float, wall: float) -> list[tuple[str, bytes]]:
        """One 20 ms frame at monotonic ``now``: mix, feed returns, encode; what to publish.

        While nothing audible comes in, the silence gate skips the mix and the encoder
        (media/silence.py); the frame still takes its place in the chunk, so the sequence
        and pts run on exactly as if it had been encoded."""
        out: list[tuple[str, bytes]] = []
        sessions = list(self.sessions.values())
        frames: dict[str, np.ndarray | None] = {}
        heard = False
        for s in sessions:
            pcm = frames[s.identity] = s.pull()
            if s.identity in self.muted:
                self.meter.add(s.identity, None)
            elif self.meter.add(s.identity, pcm):
                heard = True
        plan = self.gate.plan(heard)
        if plan is Plan.MIX:
            result = mix(frames, self.muted)
            for s in sessions:
                s.returns.feed(result.returns[s.identity])
            packet = self.encoder.encode(result.program)
        else:
            for s in sessions:
                s.returns.feed(SILENT_FRAME)
            if plan is Plan.REPEAT and self.gate.packet is not None:
                packet = self.gate.packet
            else:
                packet = self.encoder.encode(SILENT_FRAME)
                self.gate.encoded(packet)
        chunk = self.packager.add(packet, int(wall * 1e6))
        if chunk is not None:
            out.append((subjects.media(self.space), chunk.encode()))
        report = self.meter.report(self.space, frames.keys(), now, wall)
        if report is not None:
            links = {s.identity: SpeakerLink(**s.link(now)) for s in sessions}
            levels = Levels(self.space, report["levels"], report["speaking"], report["at"], links)
            out.append((subjects.levels(self.space), encode(levels)))
        return out

    async def close_all(self) -> None:
        """Remove and close every speaker session."""
        for sid, s in list(self.sessions.items()):
            self.remove(sid)
            await s.close()


class Stage:
    """All Spaces this process owns, and which unowned ones it takes (stage/placement.py)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bus = ctx.bus
        self.node = ctx.settings.node_id
        self.max_spaces = ctx.settings.stage_max_spaces
        self.runs: dict[str, SpaceRun] = {}
        self.leases: dict[str, int] = {}
        self.renewed: dict[str, float] = {}  # monotonic time of each lease's last write
        self.lost = 0  # Spaces given up because another stage took them
        self._reapers: set[asyncio.Future[None]] = set()
        self._whips: set[asyncio.Future[None]] = set()
        self._taking: set[str] = set()  # leased (or the lease being written), no clock yet
        # Lease writes in flight (the revision the watch showed naming us, 0: none yet), and
        # those that got no answer (when asked): they may still land, and are then ours.
        self._creating: dict[str, int] = {}
        self._unanswered: dict[str, float] = {}
        self._begins: set[asyncio.Future[None]] = set()
        self.gate = NegotiationGate()
        self.retired = Tally()  # counters of Spaces this stage no longer runs
        self.ice = ctx.settings.ice()
        # Live Spaces as the bucket's watch reports them: tending reads this, never the
        # bucket (ended Spaces pile up there until they expire).
        self.live: dict[str, Space] = {}
        # Who holds which lease (a watch of the leases bucket) and the rivals' heartbeats.
        self.placement = Placement(self.node, self.max_spaces, subjects.LEASE_TTL_S)
        # What the rivals' heartbeats say they mix and published unstored (takeovers).
        self.rivals = RivalReports()
        # Live Spaces nobody holds, with their snapshot: the claimer takes them one by one.
        self.pending: dict[str, Space] = {}
        self._nudge = asyncio.Event()  # pending or the leases' holders changed
        self._claimer: asyncio.Task[None] | None = None
        self.cpu = CpuMeter()
        self.draining = False  # stopping: hands its Spaces over, takes none
        self._watch: Watch | None = None
        self._lease_watch: Watch | None = None
        self._subs: list[Subscription] = []

    def report(self, wall: float) -> StageHeartbeat:
        """The heartbeat: what this stage runs, its budget and load, and its counters."""
        total = Tally()
        total.add(self.retired)
        worst = 0.0
        for r in self.runs.values():
            total.add(r.counts())
            worst = max(worst, r.clock.take_worst())
        target = max((sess.playout.jitter.target * sess.playout.jitter.frame_s
                      for r in self.runs.values() for sess in r.sessions.values()),
                     default=0.0)
        ahead = {space: a.as_list() for space, r in self.runs.items()
                 if (a := r.ahead()) is not None}
        return replace(stage_report(self.node, list(self.runs), self._speakers(), total,
                                    worst, wall, target),
                       max_spaces=self.max_spaces, cpu=round(self.cpu.share, 3),
                       draining=self.draining, ahead=ahead)

    def _speakers(self) -> int:
        return sum(len(r.sessions) for r in self.runs.values())

    def _retire(self, run: SpaceRun) -> None:
        self.retired.add(run.counts())

    async def start(self) -> None:
        """Watch Spaces and leases, answer WHIP offers, hear the other stages, and start
        claiming the live Spaces nobody holds."""
        self._watch = await self.bus.kv_watch(subjects.SPACES_BUCKET, self._on_space)
        self._lease_watch = await self.bus.kv_watch(subjects.LEASES_BUCKET, self._on_lease)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(self._watch.ready.wait(),
                                                  self._lease_watch.ready.wait()), 30)
        self._subs = [
            await self.bus.subscribe("townhall.*.state", self._on_state),
            await self.bus.subscribe("townhall.*.control", self._on_control),
            await self.bus.subscribe(subjects.whip("*"), self._on_whip),
            await self.bus.subscribe(subjects.STAGES, self._on_stage_report),
        ]
        for space, snap in list(self.live.items()):
            self._consider(space, snap)
        self._claimer = asyncio.ensure_future(self._claim_loop())

    def _on_space(self, change: Change) -> None:
        snap = None
        if change.value is not None:
            try:
                snap = decode_space(change.value)
            except SnapshotError as exc:
                # Not a Space this version reads (a newer api's?): what we knew stands,
                # rather than stopping a live Space's audio over it.
                log.warning("skipped a Space document: %s", exc, extra={"space": change.key})
                return
        if snap is not None and snap.state == "live":
            self.live[change.key] = snap
            self._consider(change.key, snap)
            return
        self.live.pop(change.key, None)
        self.rivals.forget(change.key)
        self._consider(change.key, None)
        if change.key in self.runs:  # ended: the state message may come later, or never
            task = asyncio.ensure_future(self.release(change.key))
            self._reapers.add(task)
            task.add_done_callback(self._reapers.discard)

    def _on_lease(self, change: Change) -> None:
        holder = None if change.value is None else change.value.decode(errors="replace")
        asked = self._unanswered.pop(change.key, None)
        if holder == self.node and change.key in self._creating:
            self._creating[change.key] = change.revision  # landed, whether answered or not
        elif holder == self.node and asked is not None and change.key not in self.leases:
            self._adopt(change.key, change.revision, asked)
        if self.placement.lease(change.key, holder, time.monotonic()):
            self._nudge.set()  # loads moved: a claimer waiting on them looks again
        if holder is None:  # handed back (or deleted): take it if it is still live
            self._consider(change.key, self.live.get(change.key))
        else:
            self.pending.pop(change.key, None)

    async def _on_stage_report(self, msg: Message) -> None:
        with contextlib.suppress(MessageError):  # not a heartbeat: not heard
            beat = decode_heartbeat(msg.data)
            now = time.monotonic()
            cap = Capacity.from_report(asdict(beat))
            if cap is not None:
                self.placement.heard(cap, now)
            if beat.node != self.node:
                self.rivals.heard(beat.node, beat.spaces, beat.ahead, now,
                                  draining=beat.draining)

    def _consider(self, space: str, snap: Space | None) -> None:
        """A Space is live (``snap``) or not (None): queue it for the claimer while nobody
        holds its lease, forget it otherwise."""
        if snap is None or space in self.runs or space in self._taking \
                or self.placement.holder(space) is not None:
            self.pending.pop(space, None)
            return
        self.pending[space] = snap
        self._nudge.set()

    async def _on_state(self, msg: Message) -> None:
        try:
            snap = decode_space(msg.data)
        except SnapshotError as exc:
            log.warning("dropped a state message on %s: %s", msg.subject, exc)
            return
        space = snap.id
        if space in self.runs:
            if snap.state != "live":
                await self.release(space)
                return
            for s in self.runs[space].apply(snap):
                await self._drop(space, s)
        else:
            self._consider(space, snap if snap.state == "live" else None)

    async def _on_control(self, msg: Message) -> None:
        space = msg.subject.split(".")[1]
        run = self.runs.get(space)
        if run is None:
            return
        cmd = decoded(decode_control, msg.data, msg.subject, "a control message", log)
        if cmd is None:
            return
        if isinstance(cmd, Kick):
            for s in [s for s in run.sessions.values() if s.identity == cmd.identity]:
                await self._drop(space, s)
        else:
            await self.release(space)

    async def _drop(self, space: str, session: SpeakerSession) -> None:
        run = self.runs.get(space)
        if run is not None:
            run.remove(session.id)
        await session.close()

    async def _on_whip(self, msg: Message) -> None:
        space = msg.subject.rsplit(".", 1)[1]
        run = self.runs.get(space)
        if run is None and space in self._taking and msg.reply:
            # Our lease is already in KV (so the api asked) but the clock is not running
            # yet: say so now rather than leave the api waiting out its timeout.
            await self.bus.respond(msg.reply, encode(WhipReply(
                503, "the stage is taking this Space over; retry", slug="no-stage",
                retry_after=1)))
            return
        if run is None or not msg.reply:
            return  # not ours: the owner answers
        try:
            req = decode_whip_request(msg.data)
        except MessageError:
            return
        # Answered in a task of its own: the subscription hands over messages one at a time,
        # so one slow negotiation would otherwise queue every other offer (and leave) behind
        # it, unbounded. The gate bounds how many run at once instead.
        task = asyncio.ensure_future(self._answer_whip(space, run, req, msg.reply))
        self._whips.add(task)
        task.add_done_callback(self._whips.discard)

    async def _answer_whip(self, space: str, run: SpaceRun, req: WhipRequest,
                           reply_to: str) -> None:
        try:
            reply = await self._whip_reply(space, run, req)
        except Exception:
            log.exception("WHIP request failed", extra={"space": space})
            reply = WhipReply(500, "the stage could not handle this request")
        await self.bus.respond(reply_to, encode(reply))

    async def _whip_reply(self, space: str, run: SpaceRun, req: WhipRequest) -> WhipReply:
        """The reply to one WHIP offer or leave: a status, a detail safe to show the client,
        and for a 201 the session id and SDP answer."""
        if isinstance(req, WhipLeave):
            found = run.sessions.get(req.session)
            if found is None or found.identity != req.identity:
                return WhipReply(404, "no such WHIP session", slug="no-session")
            await self._drop(space, found)
            return WhipReply(200)
        identity = req.identity
        if identity not in run.stage_ids and req.version is not None:
            await run.roster_at(req.version, ROSTER_WAIT_S)
        if identity not in run.stage_ids:
            return WhipReply(403, "not on this Space's stage")
        try:  # the api checked too; the stage does not count on it
            sdp = check_sdp(req.sdp.encode())
        except Problem as refusal:
            return WhipReply(refusal.status, refusal.detail, slug=refusal.instance_slug)
        if not self.gate.enter(space):
            return WhipReply(503, "the stage is busy; retry shortly", slug="stage-busy",
                             retry_after=1)
        try:
            session = SpeakerSession(identity, req.name or identity, self.ice)
            try:
                answer = await asyncio.wait_for(session.answer(sdp), NEGOTIATION_TIMEOUT_S)
            except TimeoutError:
                await session.close()
                return WhipReply(503, "the stage could not answer in time; retry",
                                 slug="stage-busy", retry_after=2)
            except Exception:
                # aiortc's messages are internals ('NoneType' object has no attribute...):
                # they go to the log, the speaker gets a plain refusal.
                log.warning("cannot use a WHIP offer", exc_info=True,
                            extra={"space": space, "identity": identity})
                await session.close()
                return WhipReply(422, "the stage cannot use this offer", slug="offer-refused")
        finally:
            self.gate.leave(space)
        if self.runs.get(space) is not run:  # released while negotiating
            await session.close()
            return WhipReply(404, "the Space is no longer on this stage")
        if identity not in run.stage_ids:  # moved off the stage while negotiating
            await session.close()
            return WhipReply(403, "not on this Space's stage")
        for old in [s for s in run.sessions.values() if s.identity == identity]:
            await self._drop(space, old)  # a reconnect replaces the old session
        run.sessions[session.id] = session
        reaper = asyncio.ensure_future(self._reap(space, session))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return WhipReply(201, session=session.id, sdp=answer)

    async def _reap(self, space: str, session: SpeakerSession) -> None:
        await session.closed.wait()
        run = self.runs.get(space)
        if run is not None:
            run.remove(session.id)

    async def _claim_loop(self) -> None:
        """Take the Spaces nobody holds, one at a time, each after this stage's wait."""
        while True:
            await self._nudge.wait()
            self._nudge.clear()
            try:
                await self._place()
            except Exception:
                log.exception("placing Spaces failed")

    async def _place(self) -> None:
        while self.pending and not self.draining:
            jitter, since = random.random(), time.monotonic()
            while True:  # the wait shrinks as rivals catch up: look again on each change
                wait = self.placement.wait(time.monotonic(), spaces=self._count(),
                                           speakers=self._speakers(), cpu=self.cpu.share,
                                           jitter=jitter)
                if wait is None or not self.pending:
                    return  # at the budget: a release of ours nudges again
                left = since + wait - time.monotonic()
                if left <= 0:
                    break
                self._nudge.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), left)
            # At random: rivals at the same load then rarely race for the same one.
            space = random.choice(list(self.pending))
            await self._claim(space, self.pending.pop(space))

    def _count(self) -> int:
        return len(self.runs) + len(self._taking)

    async def _claim(self, space: str, snap: Space) -> None:
        """Race for one Space's lease; if won, start it in the background (the next claim
        need not wait for this one's stream read)."""
        try:
            rev = await self._lease(space)
        except Exception:  # no answer in time: the next tending looks again
            log.warning("could not take a Space", exc_info=True, extra={"space": space})
            return
        if rev is None:
            return  # another stage was first; the leases' watch says who
        task = asyncio.ensure_future(self._begin(space, snap, rev))
        self._begins.add(task)
        task.add_done_callback(self._begun)

    def _begun(self, task: asyncio.Future[None]) -> None:
        self._begins.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not start a Space", exc_info=task.exception())

    async def acquire(self, space: str, snap: Space) -> bool:
        """Take ``space`` now (no placement wait); False if another stage holds it."""
        if space in self.runs:
            return True
        rev = await self._lease(space)
        if rev is None:
            return False
        await self._begin(space, snap, rev)
        return space in self.runs

    async def _lease(self, space: str) -> int | None:
        """Create the Space's lease (create-only: one stage wins); its revision, or None.
        From then on tending renews it, while the clock is not running yet too.

        While the write is in flight we answer WHIP offers "taking over" (the api may read
        our lease before we do, and would otherwise wait out its whole timeout on us), and
        a write that got no answer but landed anyway is taken up when the watch shows it."""
        asked = time.monotonic()  # the lease lives from before the write reached the server
        self._creating[space] = 0
        self._taking.add(space)
        rev: int | None = None
        try:  # bounded: a request lost in a cluster's re-election must not hold up tending
            rev = await asyncio.wait_for(self.bus.kv_create(
                subjects.LEASES_BUCKET, space, self.node.encode()), RENEW_TIMEOUT_S)
        except CasConflict:
            return None
        except Exception:
            rev = self._creating.get(space) or None  # the watch showed it landed
            if rev is None:
                self._unanswered[space] = asked
                raise
        finally:
            self._creating.pop(space, None)
            if rev is None:
                self._taking.discard(space)
        self.pending.pop(space, None)
        self.leases[space] = rev
        self.renewed[space] = asked
        return rev

    def _adopt(self, space: str, rev: int, asked: float) -> None:
        """A lease write of ours that got no answer landed after all: the Space is ours."""
        snap = self.live.get(space)
        if snap is None or self.draining or space in self.runs or space in self._taking:
            return  # not live, or stopping: it lapses in a TTL (the watch then says so)
        log.info("our unanswered lease write landed", extra={"space": space})
        self._taking.add(space)
        self.pending.pop(space, None)
        self.leases[space] = rev
        self.renewed[space] = asked
        task = asyncio.ensure_future(self._begin(space, snap, rev))
        self._begins.add(task)
        task.add_done_callback(self._begun)

    async def _newest_stored(self, space: str) -> Message | None:
        """The Space's newest stored chunk, asked again while ``MEDIA`` elects a leader
        (we keep the lease meanwhile: any other stage would wait for the same election);
        raises once the lease is no longer ours or ``BEGIN_WAIT_S`` has passed."""
        deadline = time.monotonic() + BEGIN_WAIT_S
        while True:
            try:
                return await asyncio.wait_for(self.bus.last_message(
                    subjects.MEDIA_STREAM, subjects.media(space)), RENEW_TIMEOUT_S)
            except Exception:
                if space not in self.leases or self.draining \
                        or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(BEGIN_RETRY_S)

    async def _begin(self, space: str, snap: Space, rev: int) -> None:
        """Start the clock of a Space whose lease we just created."""
        try:
            last_msg = await self._newest_stored(space)
        except Exception:
            if space in self.leases:  # rather than sit on it for a TTL
                self.renewed.pop(space, None)
                await self._hand_back(space, self.leases.pop(space))
            raise
        finally:
            self._taking.discard(space)
        if space not in self.leases:
            return  # lost or released meanwhile (its lease is dealt with)
        if self.draining:  # stopping meanwhile: another stage takes it
            self.renewed.pop(space, None)
            await self._hand_back(space, self.leases.pop(space))
            return
        last = Chunk.decode(last_msg.data) if last_msg else None
        # The first chunk is numbered again from the newest stored one when it is sent
        # (send_chunks): an old owner may still be storing.
        run = SpaceRun(self.bus, space, snap, Packager.after(last),
                       stored_seq=last_msg.seq if last_msg else 0, on_fenced=self._fenced,
                       rivals=self.rivals, on_ahead=self._on_ahead)
        run.task = asyncio.ensure_future(run.run())
        self.runs[space] = run
        log.info("stage owns space", extra={"space": space,
                                            "from_seq": run.packager.next_seq})

    async def _hand_back(self, space: str, rev: int | None) -> None:
        """Delete our lease, never a successor's: only at our revision, or, if that moved
        (a renewal cancelled after it reached the server), while it still names us."""
        with contextlib.suppress(Exception):
            try:
                await asyncio.wait_for(self.bus.kv_delete(
                    subjects.LEASES_BUCKET, space, revision=rev), RENEW_TIMEOUT_S)
            except CasConflict:
                entry = await asyncio.wait_for(
                    self.bus.kv_get(subjects.LEASES_BUCKET, space), RENEW_TIMEOUT_S)
                if entry is not None and entry.value == self.node.encode():
                    await asyncio.wait_for(self.bus.kv_delete(
                        subjects.LEASES_BUCKET, space, revision=entry.revision),
                        RENEW_TIMEOUT_S)

    async def release(self, space: str) -> None:
        """Stop a Space that is no longer live and delete its lease. (Should the lease's
        delete reach a stage before the Space's end does, that stage takes it and lets it
        go again once the watch of ``spaces`` says it ended.)"""
        self.pending.pop(space, None)
        run = self.runs.pop(space, None)
        rev = self.leases.pop(space, None)
        self.renewed.pop(space, None)
        if run is None:
            if rev is not None:  # still taking it over: the lease is ours to delete
                await self._hand_back(space, rev)
            return
        if run.task:
            run.task.cancel()
        await run.close_all()
        self._retire(run)
        await self._hand_back(space, rev)
        self._nudge.set()  # room again, if we were at the budget

    async def tend(self) -> None:
        """Once a second: renew our leases (all at once, bounded), and queue live Spaces
        whose lease lapsed (a dead stage's: a lapse shows no delete in the watch)."""
        await _bounded([self._renew(space, rev) for space, rev in list(self.leases.items())])
        self.look_for_lapses()

    def look_for_lapses(self) -> None:
        """Queue the live Spaces whose lease lapsed (a dead stage's: a lapse shows no
        delete in the watch), four times a second rather than once per upkeep round."""
        ours = self.runs.keys() | self._taking
        now = time.monotonic()
        for space in self.placement.unheld([s for s in self.live if s not in ours], now):
            # A lease that lapsed while its holder still says it mixes the Space (renewals
            # unanswered, chunks still stored): the holder takes it again once it can.
            if self.rivals.mixed_by(space, now, MIXING_HEARD_S) is None:
                self._consider(space, self.live[space])
        if self.pending:
            self._nudge.set()

    async def _renew(self, space: str, rev: int) -> None:
        asked = time.monotonic()
        try:
            new = await asyncio.wait_for(self.bus.kv_update(
                subjects.LEASES_BUCKET, space, self.node.encode(), rev), RENEW_TIMEOUT_S)
            self._renewed(space, rev, new, asked)
        except CasConflict:
            await self._retake(space, rev, asked)
        except Exception:
            # No answer (our NATS node is cut off, or the bucket is electing a leader).
            if self._overdue(space):
                await self.lose(space, "could not renew the lease in time")

    def _renewed(self, space: str, rev: int, new: int, asked: float) -> None:
        if self.leases.get(space) == rev:  # not released nor renewed otherwise meanwhile
            self.leases[space] = new
            self.renewed[space] = asked

    def _overdue(self, space: str) -> bool:
        """Whether to give up a Space whose renewals go unanswered (stage.upkeep): not
        while its chunks are still stored or the other stages still hear us."""
        if space not in self.leases:
            return False
        run = self.runs.get(space)
        heard = self.rivals.last_heard()
        return UPKEEP.give_up(
            time.monotonic(), renewed=self.renewed.get(space, 0.0),
            stored=run.stored_at if run is not None and not run.fenced else None,
            heard=heard if heard > float("-inf") else None)

    async def _retake(self, space: str, rev: int, asked: float) -> None:
        """A renewal found the lease moved. Someone else's: stop now. Gone (it expired while
        renewals went unanswered, and nobody took it) while we still store our chunks:
        take it again. Still ours at another revision (a renewal that timed out reached the
        server): carry on with that one."""
        try:
            entry = await asyncio.wait_for(
                self.bus.kv_get(subjects.LEASES_BUCKET, space), RENEW_TIMEOUT_S)
            if entry is not None and entry.value == self.node.encode():
                self._renewed(space, rev, entry.revision, asked)
                return
            run = self.runs.get(space)
            if entry is None and (space in self._taking or (run is not None and not run.fenced)):
                new = await asyncio.wait_for(self.bus.kv_create(
                    subjects.LEASES_BUCKET, space, self.node.encode()), RENEW_TIMEOUT_S)
                self._renewed(space, rev, new, asked)
                log.info("took the lease again", extra={"space": space})
                return
        except CasConflict:
            pass  # another stage created it first
        except Exception:
            if self._overdue(space):  # no answer about it either
                await self.lose(space, "could not renew the lease in time")
            return
        if self.leases.get(space) == rev:
            self.leases.pop(space, None)  # someone else's now: not ours to delete
            await self.lose(space, "another stage holds the lease")

    def _on_ahead(self, space: str) -> None:
        """A Space of ours published a chunk the stream may not hold: tell the rivals now."""
        self._spawn(self.announce())

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    def _fenced(self, space: str) -> None:
        """A chunk of ours was refused: another stage stored one since; give it up now."""
        task = asyncio.ensure_future(self.lose(space, "another stage publishes its chunks"))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def lose(self, space: str, why: str) -> None:
        """Stop mixing a Space we no longer own: its clock, its speakers' sessions (they
        reconnect through the api to the new owner). If the lease is still at our revision
        (we were fenced right after taking it over) it is deleted, so that the Space is
        retaken at once rather than after the TTL; someone else's lease stays."""
        run = self.runs.pop(space, None)
        rev = self.leases.pop(space, None)
        self.renewed.pop(space, None)
        if run is not None and (ahead := run.gave_up()) is not None:
            self.rivals.note(space, ahead)  # should we take it again: number past them
        if run is not None:
            self.lost += 1
            log.warning("lost the Space", extra={"space": space, "reason": why})
            run.fenced = True
            if run.task:
                run.task.cancel()
        if rev is not None:
            await self._hand_back(space, rev)
        if run is not None:
            await run.close_all()
            self._retire(run)
        self._nudge.set()

    async def stop(self) -> None:
        """Hand every Space over at once: say we are stopping (so no rival waits for us),
        stop every clock, then delete every lease in parallel; the others' watches see
        the deletes and take the Spaces within a moment rather than a TTL."""
        if self.draining:
            return  # stopped already
        self.draining = True
        for task in list(self._whips):
            task.cancel()
        if self._claimer is not None:
            self._claimer.cancel()
        if self._begins:  # each stops asking MEDIA once draining, and hands its lease back
            await asyncio.wait(list(self._begins), timeout=2 * RENEW_TIMEOUT_S)
        await self.announce()
        runs = list(self.runs.items())
        self.runs.clear()
        for _, run in runs:
            run.fenced = True
            if run.task:
                run.task.cancel()
        leases = dict(self.leases)
        self.leases.clear()
        self.renewed.clear()
        # Leases of Spaces still being taken over too (their clock never started).
        await _bounded([self._hand_back(space, rev) for space, rev in leases.items()])
        for watch in (self._watch, self._lease_watch):
            if watch is not None:
                await watch.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        # Speakers' sessions last: their clients reconnect to the new owners meanwhile.
        closing = [asyncio.ensure_future(run.close_all()) for _, run in runs]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_TIMEOUT_S)
        for _, run in runs:
            self._retire(run)

    async def run(self) -> None:
        """Start, report and tend once a second until cancelled; then hand over."""
        await self.start()
        beat = asyncio.ensure_future(heartbeat(self))
        lapses = asyncio.ensure_future(self._lapse_loop())
        try:
            while True:
                try:
                    await self.tend()
                except Exception:
                    log.exception("stage upkeep failed")
                await asyncio.sleep(RENEW_S)
        finally:
            beat.cancel()
            lapses.cancel()
            await self.stop()

    async def _lapse_loop(self) -> None:
        while True:
            await asyncio.sleep(LAPSE_CHECK_S)
            if not self.draining:
                self.look_for_lapses()

    async def announce(self) -> None:
        """Publish the heartbeat now (bounded); the stage's other reports come from
        ``heartbeat``."""
        try:
            await self.bus.publish(subjects.stage_report(self.node),
                                   encode(self.report(time.time())))
            await self.bus.flush(timeout=RENEW_TIMEOUT_S)
        except Exception:
            log.warning("stage heartbeat failed", exc_info=True)


async def _bounded(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` concurrently, at most ``PARALLEL`` at a time."""
    if not jobs:
        return
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(one(j) for j in jobs))


async def heartbeat(stage: Stage) -> None:
    """Publish the stage's report on ``townhall.stages.<node>`` at once, then once a
    second, with the share of a core the process used."""
    while True:
        stage.cpu.sample(time.process_time(), time.monotonic())
        await stage.announce()
        await asyncio.sleep(REPORT_S)


async def run(ctx: Context) -> None:
    """The stage role: runs until cancelled, then hands its Spaces over."""
    await Stage(ctx).run()
