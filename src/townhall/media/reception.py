"""What the stage's RTCP receiver reports say about a speaker's uplink, with no I/O.

RFC 3550's counters (A.3: expected from the extended highest sequence number, less the
packets received) with one difference: a packet that arrived only because the stage asked
for it again (a resend on RTCP NACK, which reuses the packet's own sequence number) counts
as lost, as it was on the link. Counted as received, as aiortc's StreamStatistics counts
it, 15 % of random loss repaired by resends showed as ~2 % (the resends' own 15 % loss):
a sender that adapts to the reports then never hears of the loss, nor of a bottleneck
whose resends come too late to play. Duplicates are not counted either.

A resend and an original that was merely late (reordered) look alike; the original can
come at any time, a resend no sooner than a round trip after the ask. So a packet counts
as a resend when it arrives at least half the round trip after it was first asked for
(at once when the round trip is not known yet), give or take the arrival clock's
resolution (aiortc stamps packets in whole milliseconds: on a loopback a resend comes
within the millisecond of the ask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from townhall.media.jitterbuffer import unwrap_seq

# The RTCP report's cumulative loss is a signed 24-bit field.
_LOST_MIN, _LOST_MAX = -(1 << 23), (1 << 23) - 1


@dataclass
class ReceptionStats:
    """One RTP stream's reception counters; ``add`` each packet, ``take_fraction_lost``
    once per receiver report.

    It also answers as aiortc's ``StreamStatistics`` does (``fraction_lost``,
    ``packets_lost``, ``max_seq``, ``jitter``, ``packets_received``), so aiortc's own
    RTCP loop sends our figures with its timing and round-trip fields.
    """

    clock_rate: int = 48_000
    window: int = 1024           # sequence numbers remembered for spotting duplicates
    resolution_s: float = 0.001  # of the arrival times
    received: int = 0            # packets that came the first time they were sent
    resends: int = 0             # packets that came only after we asked again (lost)
    duplicates: int = 0
    _base: int | None = None
    _highest: int | None = None
    _seen: set[int] = field(default_factory=set)
    _jitter: float = 0.0         # RFC 3550 interarrival jitter, timestamp units
    _transit: float | None = None
    _expected_prior: int = 0
    _received_prior: int = 0

    def add(self, seq16: int, timestamp: int, arrival_s: float,
            asked_at: float | None = None, rtt_s: float | None = None) -> None:
        """A packet with RTP ``seq16`` and ``timestamp`` arrived at ``arrival_s``;
        ``asked_at``: when we first asked for it (None: never), ``rtt_s``: the round trip
        to the sender when known."""
        seq = unwrap_seq(seq16 & 0xFFFF, self._highest)
        if seq in self._seen:
            self.duplicates += 1
            return
        self._seen.add(seq)
        if self._highest is None or seq > self._highest:
            self._highest = seq
            if len(self._seen) > 2 * self.window:
                self._seen = {s for s in self._seen if s > seq - self.window}
        if self._base is None or seq < self._base:
            self._base = seq
        if (asked_at is not None
                and arrival_s - asked_at + self.resolution_s >= 0.5 * (rtt_s or 0.0)):
            self.resends += 1
            return  # its transit time says how late we asked, not how the path varies
        self.received += 1
        transit = arrival_s * self.clock_rate - timestamp
        if self._transit is not None:
            # Timestamps wrap at 2**32; a difference that large is that, not jitter.
            d = abs(transit - self._transit)
            if d < 1 << 31:
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        """Packets the sender sent from the first to the highest sequence number seen."""
        if self._base is None or self._highest is None:
            return 0
        return self._highest - self._base + 1

    def take_fraction_lost(self) -> int:
        """The share lost since the previous call, in 1/256 (RTCP's 8-bit fraction)."""
        expected, received = self.expected, self.received
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    # aiortc's StreamStatistics interface (rtcrtpreceiver, read by its RTCP loop).
    @property
    def fraction_lost(self) -> int:
        """As ``take_fraction_lost()``: aiortc reads it once per report."""
        return self.take_fraction_lost()

    @property
    def packets_lost(self) -> int:
        """Cumulative packets lost, clamped to the report's 24-bit field."""
        return max(_LOST_MIN, min(_LOST_MAX, self.expected - self.received))

    @property
    def packets_received(self) -> int:
        """Packets that came the first time (resends and duplicates not counted)."""
        return self.received

    @property
    def max_seq(self) -> int:
        """The extended highest sequence number (cycles in the top 16 bits)."""
        return (self._highest or 0) & 0xFFFFFFFF

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units."""
        return int(self._jitter)
