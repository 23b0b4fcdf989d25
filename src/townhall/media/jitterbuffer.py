"""A speaker's packet jitter buffer, with no I/O: RTP packets in, one slot per mixer tick out.

Packets are taken off aiortc's receiver before its own jitter buffer (see stage.ingest),
so reordering, loss, bursts and the sender's clock drift are handled here, against the
mixer's clock; townhall.media.playout decodes the slots (FEC, PLC).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def unwrap_seq(seq16: int, highest: int | None) -> int:
    """The extended number of a 16-bit RTP sequence number: the one nearest ``highest``
    (the highest extended number seen; None before the first packet)."""
    if highest is None:
        return seq16
    base = highest - (highest & 0xFFFF)
    cands = (base + seq16 - 0x10000, base + seq16, base + seq16 + 0x10000)
    return min(cands, key=lambda s: abs(s - highest))


@dataclass(frozen=True)
class Slot:
    """One 20 ms slot for the decoder: a packet, or ``payload=None`` = lost.

    A lost slot carries ``fec``, the next packet, when it is already waiting: the decoder
    rebuilds the lost frame from its in-band FEC; otherwise it runs Opus PLC.
    """

    seq: int
    payload: bytes | None
    fec: bytes | None = None


@dataclass
class JitterBuffer:
    """RTP packets in any order in, one slot per mixer tick out; no I/O, time passed in.

    Reorders by (unwrapped 16-bit) sequence number, drops duplicates and packets whose
    slot already played (counted as late), marks a gap as lost once a later packet is
    waiting (the decoder conceals it with Opus PLC), and adapts its target depth to the
    measured interarrival jitter (RFC 3550 estimator) between ``min_frames`` and
    ``jitter_cap``: up at once (and one frame more for every packet that came too late to
    play), down one frame per ``calm_packets`` only. Holding at most ``max_frames``
    packets bounds a flooding sender.
    A delay spike (the path holds packets up, then delivers them together) shows as a
    buffer that ran dry and then has far more than its target waiting: they are all
    played, and that depth (up to ``spike_cap``) becomes the target, so the next spike
    is absorbed instead of concealed and cut; it comes down a frame per ``calm_packets``.
    When the sender's clock runs faster than the mixer's (drift) or a burst leaves the
    buffer deeper than ``target + 2``, one slot per tick is skipped until it is back.
    A buffer that runs empty while playing first bridges up to ``bridge_frames`` slots
    with concealment (a burst of lost packets as deep as the buffer, or a packet a little
    late): if the missing packet then turns up, play resumes from it (one frame later,
    counted as ``stretched``); if a later one does, the bridged slots were lost; if
    nothing does, it was a pause (an underrun, nothing lost).
    Excess depth below that is drained slowly: when the buffer stayed deeper than its
    target for a whole ``drain_window`` of ticks (the target fell after a jittery start,
    say), one slot is skipped, so the delay comes back down instead of staying up.
    A slot is 20 ms; a longer packet (40/60 ms, ``packet_frames`` slots, set by the
    playout) takes the slot of its first 20 ms, and ``covered()`` skips the rest once it
    played. Depth then counts the newest packet's whole length; the depth held to (and
    the one a drain waits for) is deeper by the packet's length less one slot, and "too
    deep" is two packets past it (the depth moves a packet at a time), so 20 ms packets
    keep the rules above exactly.
    """

    frame_s: float = 0.020
    min_frames: int = 1
    max_frames: int = 25
    jitter_cap: int = 5               # deepest target for jitter and late packets (100 ms)
    spike_cap: int = 20               # deepest target after a delay spike (400 ms)
    drain_window: int = 50            # ticks (1 s at 20 ms)
    bridge_frames: int = 5            # concealed slots on an empty buffer before a pause
    calm_packets: int = 150           # packets (3 s) without a reason to stay deep, per step down
    target: int = 2
    jitter_s: float = 0.0
    late: int = 0
    lost: int = 0
    duplicates: int = 0
    overflows: int = 0
    underruns: int = 0
    skipped: int = 0
    stretched: int = 0
    spikes: int = 0
    packet_frames: int = 1            # slots the sender's packets take (their 20 ms frames)
    _packets: dict[int, bytes] = field(default_factory=dict)
    _next: int | None = None          # unwrapped seq of the next slot to play
    _highest: int | None = None       # highest unwrapped seq seen
    _ref: tuple[int, float] | None = None  # (seq, arrival) of the previous packet
    _playing: bool = False
    _started: bool = False            # a slot has played: earlier packets are late
    _window: int = 0                  # ticks played in the current drain window
    _min_depth: int | None = None     # shallowest depth seen in it
    _hole: int = 0                    # slots bridged on an empty buffer, not yet resolved
    _hole_start: int = 0              # the first of them
    _calm: int = 0                    # packets since the target last moved
    _dry: bool = False                # ran dry since the last slot that had a packet

    def _unwrap(self, seq16: int) -> int:
        return unwrap_seq(seq16, self._highest)

    def push(self, seq16: int, payload: bytes, now: float) -> bool:
        """A packet arrived at ``now`` (seconds, any monotonic origin); True when it was
        kept to play (not late, not a duplicate)."""
        seq = self._unwrap(seq16 & 0xFFFF)
        if self._hole and self._next is not None and seq >= self._hole_start:
            if seq < self._next:  # a bridged slot's packet after all: resume from it
                self.lost += seq - self._hole_start
                self.stretched += self._next - seq
                self._next = seq
            else:                 # a later packet: the bridged slots were lost
                self.lost += self._hole
            self._hole = 0
        if self._next is not None and seq < self._next:
            if self._started:
                # (A resend after a NACK, too: then the deeper buffer lets the next one play.)
                self.late += 1
                # A packet too late to play: the cushion is too thin, whatever the average
                # jitter says. One frame deeper at once.
                self.target = max(self.target, min(self.jitter_cap, self.target + 1))
                self._calm = 0
                return False
            self._next = seq  # reordered before the first slot played: start earlier
        if seq in self._packets:
            self.duplicates += 1
            return False
        if self._ref is not None:
            # RFC 3550 §6.4.1: how much the arrival spacing differs from the send spacing.
            ref_seq, ref_at = self._ref
            d = abs((now - ref_at) - (seq - ref_seq) * self.frame_s)
            self.jitter_s += (d - self.jitter_s) / 16
        self._ref = (seq, now)
        self._highest = seq if self._highest is None else max(self._highest, seq)
        self._packets[seq] = payload
        if self._next is None:
            self._next = seq
        while len(self._packets) > self.max_frames:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.overflows += 1
            self._next = max(self._next, oldest + 1)
        wanted = max(self.min_frames, min(self.jitter_cap,
                                          1 + int(3 * self.jitter_s / self.frame_s + 0.999)))
        # Up at once (jitter hurts now), down one frame per ``calm_packets`` (a quiet
        # second between two jittery ones would otherwise drop the cushion that is needed).
        self._calm += 1
        if wanted > self.target:
            self.target, self._calm = wanted, 0
        elif wanted < self.target and self._calm >= self.calm_packets:
            self.target, self._calm = self.target - 1, 0
        return True

    def pop(self) -> Slot | None:
        """The slot for this tick, or None while (re)buffering or when the sender is quiet."""
        if self._next is None or not self._packets:
            self._dry = self._dry or self._started
            if self._playing and self._hole < self.bridge_frames:
                # Lost packets or a pause? Conceal this slot; push() decides later.
                if not self._hole:
                    self._hole_start = self._next or 0
                self._hole += 1
                seq = self._next or 0
                self._next = seq + 1
                return Slot(seq=seq & 0xFFFF, payload=None)
            if self._playing:
                self.underruns += 1
                self._playing = False
                self._ref = None  # a pause is not jitter: the next talk spurt starts afresh
                if self._hole:    # nothing came: a pause, not a loss; start there again
                    self._next, self._hole = self._hole_start, 0
            return None
        if not self._playing and self._started and min(self._packets) > self._next:
            # Restarting after an underrun and the packets from where we stopped never
            # came (a loss burst longer than the bridge): start from the first that did.
            # Rewinding would conceal the gap a second time and push the speaker late.
            self.lost += min(self._packets) - self._next
            self._next = min(self._packets)
        depth = max(self._packets) - self._next + self.packet_frames
        if self._dry:
            self._dry = False
            if depth > self._too_deep:
                # Dry, then many at once: held up on the way (a delay spike), not lost.
                # Play them all, and keep this much in hand for the next spike.
                self.target, self._calm = min(self.spike_cap, depth), 0
                self.spikes += 1
        if not self._playing:
            if depth < self._goal:
                return None
            self._playing = True
            self._window, self._min_depth = 0, None
        elif depth > self._too_deep or self._drain_due(depth):
            # Too deep (sender clock faster than ours, a burst, or a target that fell):
            # skip one slot so the delay returns to the target instead of staying high
            # (a whole packet: the slots of a longer one go with it).
            skipped = self._packets.pop(self._next, None)
            self._next += 1 if skipped is None else self.packet_frames
            self.skipped += 1
        seq = self._next
        self._next = seq + 1
        self._started = True
        payload = self._packets.pop(seq, None)
        if payload is None:
            self.lost += 1
            return Slot(seq=seq & 0xFFFF, payload=None, fec=self._packets.get(seq + 1))
        return Slot(seq=seq & 0xFFFF, payload=payload)

    @property
    def _goal(self) -> int:
        """The depth to hold, in slots: the target, plus the rest of a longer packet."""
        return self.target + self.packet_frames - 1

    @property
    def _too_deep(self) -> int:
        """Deeper than this: skip (two packets past the goal; 20 ms: two slots)."""
        return self._goal + 2 * self.packet_frames

    def covered(self, frames: int) -> None:
        """The slot just played had a packet ``frames`` slots longer than one: skip them."""
        if self._next is None:
            return
        for seq in range(self._next, self._next + frames):
            if self._packets.pop(seq, None) is not None:
                self.skipped += 1  # a packet inside another's time: a sender's glitch
        self._next += frames

    def _drain_due(self, depth: int) -> bool:
        """True once per window in which the depth never came down to the target."""
        self._min_depth = depth if self._min_depth is None else min(self._min_depth, depth)
        self._window += 1
        if self._window < self.drain_window:
            return False
        due = self._min_depth > self._goal + self.packet_frames - 1
        self._window, self._min_depth = 0, None
        return due
