"""Which Opus bitrate a speaker sends at, from the stage's RTCP receiver reports; no I/O.

A report's fraction lost says how much of our uplink is missing, not why. Loss a bottleneck
causes falls when we send less; random loss (Wi-Fi, a lossy hop) does not, and there a
lower bitrate only costs quality (bench/README.md, "quality"). So a step down is a trial:
after loss stayed high over two reports (1-3 s), go down to the highest rate that what got
through would carry (at least one step), and compare. A bottleneck carries about the same
bytes at either rate, so the share of packets that gets through rises by about the ratio of
the rates on the wire; random loss keeps that share. A trial that shows neither that rise nor a
shorter round trip (a drained queue) is undone, and the next trial waits longer; once one
is confirmed, a bottleneck is known to be there and any loss past a few % means we still
exceed it: it goes on down. After a clean stretch we step back
up one rate; a step up that brings the loss back is undone at once and the clean stretch
needed doubles.

The stage's reports count a packet that came only as a resend on NACK as lost (the link
lost it). Loss it repairs cheaply is not a reason to send less: while the round trip is
short enough for the stage to ask for resends (``repair_rtt_s``, its NACK limit) and has
not grown past its floor (no queue filling), loss below ``severe_loss`` starts no trial.
A bottleneck with a queue shows as loss *and* a longer round trip; one that drops without
queueing (a policer) shows only past ``severe_loss``.

Reports arriving at the sender cover the interval since the previous one, so a report is
counted for a rate only if the previous one came after the switch (plus the time the
bottleneck's queue takes to drain).

The same reports size the encoder's in-band FEC (``FecSizer``: the loss libopus is told to
expect, in steps, up at once and down after a stretch of less). FEC takes its bits from
every frame, so it is weighed with the rate: see ``FecSizer.expected_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from townhall.media.nack import NackList

STEPS = (64_000, 40_000, 24_000, 16_000, 12_000, 8_000)
# RTP header and extensions, SRTP tag, UDP, IPv4: what each packet costs on the wire
# besides its Opus payload (why a bottleneck's loss falls slower than the bitrate).
OVERHEAD_BYTES = 58
LONG_PACKETS_BELOW = 24_000  # rates under this send 60 ms packets
LONG_PACKET_MS = 60


def packet_ms(bitrate: int) -> int:
    """How much audio one packet at ``bitrate`` carries. At 50 packets a second the
    overhead alone is ~23 kbit/s, so a 24 kbit/s bottleneck fits no rate at all; in 60 ms
    packets 16 kbit/s is ~24 kbit/s on the wire, 12 ~20 and 8 ~16 (a lost packet is
    60 ms concealed, but these rates are only reached below a bottleneck)."""
    return LONG_PACKET_MS if bitrate < LONG_PACKETS_BELOW else 20


def wire_bps(bitrate: int) -> float:
    """Bits per second a stream at ``bitrate`` takes on the wire, packet overhead included."""
    return bitrate + OVERHEAD_BYTES * 8 * 1000 / packet_ms(bitrate)


# % loss the encoder's FEC may be sized for. Sizing it past 10 % never paid: offline
# ±0.05 PESQ at 10-25 % loss, and in the bench the speaker at 30 % scored lower on every
# lossy row (bench/README.md, "FEC sized from the reported loss"). So: 5 on a clean link
# (the bits go to the audio; at 24 kbit/s libopus then sends no LBRR at all), 10 on loss.
FEC_LEVELS = (5, 10)


@dataclass
class FecSizer:
    """The loss (%) the speaker's Opus in-band FEC is sized for, from the reported loss.

    Up at once when a report shows more than the current level (a frame lost without
    FEC costs more than the bits); down one level after ``down_after_s`` in which every
    report stayed below ``down_margin`` of the level under it (hysteresis: loss hovering
    near a level does not flip it each report). Never below the lowest level: loss comes
    unannounced, and without FEC at all one lost packet is a concealed frame."""

    start: int = 10
    levels: tuple[int, ...] = FEC_LEVELS
    down_after_s: float = 10.0
    down_margin: float = 0.75
    _level: int = 0
    _low_since: float | None = None

    def __post_init__(self) -> None:
        self._level = min((lv for lv in self.levels if lv >= self.start),
                          default=self.levels[-1])

    @property
    def level(self) -> int:
        """The loss (%) FEC is sized for at rates where it pays."""
        return self._level

    def report(self, fraction_lost: float, now: float) -> None:
        """A receiver report's loss (0..1 since the previous one) that arrived at ``now``."""
        pct = 100 * fraction_lost
        if pct > self._level:
            self._level = min((lv for lv in self.levels if lv >= pct), default=self.levels[-1])
            self._low_since = None
            return
        lower = [lv for lv in self.levels if lv < self._level]
        if not lower or pct > self.down_margin * lower[-1]:
            self._low_since = None
            return
        if self._low_since is None:
            self._low_since = now
        elif now - self._low_since >= self.down_after_s:
            self._level = lower[-1]
            self._low_since = now

    def expected_loss(self, bitrate: int) -> int:
        """What to tell the encoder at ``bitrate``. Below ``LONG_PACKETS_BELOW`` (the
        rates a bottleneck brings us to) at most the lowest level: libopus fits its FEC
        into the rate by narrowing the audio band when told to expect more than 5 %, and
        offline the FEC size made no difference there (bench/README.md, "FEC sized from
        the reported loss")."""
        if bitrate < LONG_PACKETS_BELOW:
            return min(self._level, self.levels[0])
        return self._level


@dataclass
class _Trial:
    """A step down under way: the rate we came from and what the link did there."""

    up_index: int
    loss: float
    rtt_s: float | None
    losses: list[float] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)


@dataclass
class BitrateAdapter:
    """The send bitrate: call ``report()`` with each receiver report; it returns the new
    bitrate when it changes."""

    max_bitrate: int = STEPS[0]
    steps: tuple[int, ...] = STEPS
    down_loss: float = 0.10       # loss this high in two reports in a row: try a lower rate
    congested_loss: float = 0.03  # the same, once a trial showed a bottleneck
    up_loss: float = 0.02         # a stretch below this: try the next rate up
    up_after_s: float = 10.0      # the clean stretch before a step up (doubles on failure)
    up_after_max_s: float = 60.0
    probe_s: float = 5.0          # high loss this soon after a step up: it failed
    holdoff_s: float = 20.0       # after a failed trial (doubles up to holdoff_max_s)
    holdoff_max_s: float = 120.0
    drain_s: float = 0.25         # reports after the switch + this count for the new rate
    trial_reports: int = 2
    repair_rtt_s: float = NackList.max_rtt_s  # the stage asks for resends up to this
    severe_loss: float = 0.25     # more than resends repair (each is lost as often)
    fec: FecSizer = field(default_factory=FecSizer)  # sized from the same reports
    _rates: tuple[int, ...] = ()
    _index: int = 0
    _changed_at: float = -math.inf
    _last_report: float | None = None
    _high: list[float] = field(default_factory=list)
    _clean_since: float | None = None
    _trial: _Trial | None = None
    _holdoff_until: float = -math.inf
    _holdoff: float = 0.0
    _up_after: float = 0.0
    _stepped_up_at: float = -math.inf
    _congested: bool = False
    _rtt_floor: float = math.inf

    def __post_init__(self) -> None:
        rates = sorted({self.max_bitrate, *(s for s in self.steps if s < self.max_bitrate)},
                       reverse=True)
        self._rates = tuple(rates)
        self._holdoff = self.holdoff_s
        self._up_after = self.up_after_s

    @property
    def bitrate(self) -> int:
        """The rate to send at now."""
        return self._rates[self._index]

    @property
    def expected_loss(self) -> int:
        """The loss (%) to size the encoder's in-band FEC for now, at ``bitrate``."""
        return self.fec.expected_loss(self.bitrate)

    def report(self, fraction_lost: float, rtt_s: float | None, now: float) -> int | None:
        """A receiver report that arrived at ``now`` (loss 0..1 since the previous one, the
        round trip if known); the new bitrate, or None to keep the current one. The FEC
        size (``expected_loss``) may change with it or on its own."""
        self.fec.report(fraction_lost, now)
        previous, self._last_report = self._last_report, now
        if rtt_s is not None:
            self._rtt_floor = min(self._rtt_floor, rtt_s)
        if previous is None or previous < self._changed_at + self.drain_s:
            return None  # it covers time at the old rate
        if self._trial is not None:
            return self._judge(self._trial, fraction_lost, rtt_s, now)
        high = self.congested_loss if self._congested else self.down_loss
        if high <= fraction_lost < self.severe_loss and self._repaired(rtt_s):
            self._high = []
            self._clean_since = None
            return None
        if fraction_lost >= high:
            self._clean_since = None
            self._high.append(fraction_lost)
            if len(self._high) < 2:
                return None
            loss = sum(self._high) / len(self._high)
            self._high = []
            return self._down(loss, rtt_s, now)
        self._high = []
        if fraction_lost >= self.up_loss:
            self._clean_since = None
            return None
        if self._clean_since is None:
            self._clean_since = previous
        if self._index > 0 and now - self._clean_since >= self._up_after:
            self._stepped_up_at = now
            return self._move(self._index - 1, now)
        return None

    def _repaired(self, rtt_s: float | None) -> bool:
        """Whether the stage's resends repair the loss: a round trip it asks over, and no
        queue building up (the round trip not grown past its floor)."""
        if rtt_s is None or rtt_s > self.repair_rtt_s:
            return False
        return rtt_s - self._rtt_floor < max(0.03, 0.25 * self._rtt_floor)

    def _down(self, loss: float, rtt_s: float | None, now: float) -> int | None:
        if now - self._stepped_up_at < self.probe_s + self.drain_s:
            # The rate we just came up to does not fit: back, and wait longer next time.
            self._up_after = min(self._up_after * 2, self.up_after_max_s)
            self._stepped_up_at = -math.inf
            return self._move(self._index + 1, now)
        if self._index + 1 >= len(self._rates) or now < self._holdoff_until:
            return None
        return self._try_lower(loss, rtt_s, now)

    def _try_lower(self, loss: float, rtt_s: float | None, now: float) -> int:
        # If a bottleneck is the cause, it carries what got through: aim for a rate that
        # fits in it, at least one step down.
        carried = wire_bps(self.bitrate) * (1 - loss)
        index = self._index + 1
        while index + 1 < len(self._rates) and wire_bps(self._rates[index]) > carried:
            index += 1
        self._trial = _Trial(self._index, loss, rtt_s)
        return self._move(index, now)

    def _judge(self, trial: _Trial, loss: float, rtt_s: float | None,
               now: float) -> int | None:
        trial.losses.append(loss)
        if rtt_s is not None:
            trial.rtts.append(rtt_s)
        after = sum(trial.losses) / len(trial.losses)
        size_ratio = wire_bps(self._rates[trial.up_index]) / wire_bps(self.bitrate)
        # Delivered share of packets: a bottleneck raises it by ~size_ratio, random loss
        # by 1. One report that shows most of the rise settles it; else the geometric
        # midpoint over ``trial_reports`` decides.
        through = (1 - after) / max(1e-6, 1 - trial.loss)
        drained = (trial.rtt_s is not None and bool(trial.rtts)
                   and trial.rtt_s - min(trial.rtts) >= max(0.03, 0.25 * trial.rtt_s))
        confirmed = through >= size_ratio ** 0.75 or drained
        if not confirmed and len(trial.losses) < self.trial_reports:
            return None
        self._trial = None
        if confirmed or through >= math.sqrt(size_ratio):
            self._holdoff = self.holdoff_s
            self._congested = True
            if after >= self.congested_loss and self._index + 1 < len(self._rates):
                return self._try_lower(after, rtt_s, now)
            return None
        self._holdoff_until = now + self._holdoff
        self._holdoff = min(self._holdoff * 2, self.holdoff_max_s)
        return self._move(trial.up_index, now)

    def _move(self, index: int, now: float) -> int:
        self._index = index
        self._congested = self._congested and index > 0
        self._changed_at = now
        self._high = []
        self._clean_since = None
        return self.bitrate
