"""Which lost RTP packets to ask a speaker to send again (RFC 4585 generic NACK), no I/O.

A speaker close to the stage (round trip well under the jitter buffer's 40 ms or more)
can resend a lost packet before its slot plays: the listener then hears the original frame
rather than a low-rate FEC copy or a concealed guess. Only for senders that offered
``a=rtcp-fb:<pt> nack`` (``townhall speak`` does; Chromium does not offer it for audio),
which resend from their packet history (aiortc keeps the last 128 packets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from townhall.media.jitterbuffer import unwrap_seq


@dataclass
class NackList:
    """Sequence numbers in, ``due(now)`` says which missing ones to ask for.

    A gap behind the highest sequence number seen is asked for at once and again after
    ``retry_s``, or 1.25 round trips when that is longer (a lost request or a lost resend;
    asked sooner, the first resend is still on its way and comes twice), at most ``tries``
    times, and given up once it is ``horizon`` packets behind the newest (its slot has
    played by then: the stage's jitter buffer holds at most 10). Asks are budgeted to
    ``share`` of the packets received (up to ``burst`` in a row): on a congested uplink,
    where loss comes from a full queue, resending everything would only add to it.
    Nothing is asked while the round trip is longer than ``max_rtt_s``: a resend would
    come after its slot played (the jitter buffer deepens for late packets, to 100 ms at
    most).
    """

    retry_s: float = 0.030
    tries: int = 3
    horizon: int = 10
    share: float = 0.25
    burst: float = 8.0
    max_rtt_s: float = 0.080
    asked: int = 0           # NACK entries sent (first asks and retries)
    answered: int = 0        # packets that arrived after we asked for them
    _budget: float = 0.0
    _highest: int | None = None
    _missing: dict[int, tuple[int, float]] = field(default_factory=dict)  # seq: (tries, at)
    _asked_at: dict[int, float] = field(default_factory=dict)  # seq: first asked at

    def __post_init__(self) -> None:
        self._budget = self.burst

    def _unwrap(self, seq16: int) -> int:
        return unwrap_seq(seq16, self._highest)

    def arrived(self, seq16: int) -> bool:
        """A packet arrived; True when it is one we had asked for (resent, or late)."""
        seq = self._unwrap(seq16 & 0xFFFF)
        if self._highest is None or seq > self._highest:
            first_gap = max(seq - self.horizon, (seq if self._highest is None
                                                 else self._highest + 1))
            for gap in range(first_gap, seq):
                self._missing[gap] = (0, float("-inf"))
            self._highest = seq
            self._budget = min(self.burst, self._budget + self.share)
            for old in [s for s in self._missing if s <= seq - self.horizon]:
                del self._missing[old]
            for old in [s for s in self._asked_at if s <= seq - 2 * self.horizon]:
                del self._asked_at[old]
            return False
        entry = self._missing.pop(seq, None)
        if entry is not None and entry[0] > 0:
            self.answered += 1
            return True
        return False

    def asked_at(self, seq16: int) -> float | None:
        """When ``seq16`` was first asked for (None: never, or long ago); a packet that
        arrives after that may be the resend (stage's receiver reports count it lost)."""
        return self._asked_at.get(self._unwrap(seq16 & 0xFFFF))

    def due(self, now: float, rtt_s: float | None = None) -> list[int]:
        """The 16-bit sequence numbers to ask for now (in sequence order), counted as asked;
        ``rtt_s`` is the round trip to the sender when known. First asks go before
        retries when the budget is short: a retry may only be waiting on a slow resend."""
        if rtt_s is not None and rtt_s > self.max_rtt_s:
            self._missing.clear()
            return []
        retry_s = max(self.retry_s, 1.25 * rtt_s) if rtt_s is not None else self.retry_s
        out: list[int] = []
        for seq, (tries, at) in sorted(self._missing.items(), key=lambda m: (m[1][0], m[0])):
            if now - at < retry_s:
                continue
            if tries >= self.tries:
                del self._missing[seq]
                continue
            if self._budget < 1:
                break
            self._budget -= 1
            self._missing[seq] = (tries + 1, now)
            self._asked_at.setdefault(seq, now)
            out.append(seq)
        self.asked += len(out)
        return [seq & 0xFFFF for seq in sorted(out)]
