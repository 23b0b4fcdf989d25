"""Which number a takeover's first chunk gets, with no I/O (time passed in).

A new owner continues after the newest chunk the ``MEDIA`` stream stored. That is enough
when the old owner's chunks were all stored, but while ``MEDIA`` has no leader an owner
keeps its listeners fed on the plain subject (unstored), so listeners may have heard
numbers past the stored one; edges drop every chunk numbered at or below what they
delivered, so numbering after the stored chunk alone meant seconds of silence. The old
owner therefore says, in its heartbeat, which chunk it published last while the stream
may not hold it (``Ahead``), and the new owner numbers past everything the old owner
could have published since: it keeps 10 chunks a second on its clock, so
``seq + elapsed / chunk`` bounds it. Numbers are skipped (a gap edges and recordings
handle as a loss), never repeated; with no such report the numbering has no gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from townhall.media.chunk import SAMPLE_RATE, Chunk

SKEW_US = 500_000  # the old owner's wall clock may run this far ahead of ours (NTP: ms)


@dataclass(frozen=True)
class Ahead:
    """The newest chunk an owner published while the stream may not have stored it."""

    seq: int
    pts: int
    sent_us: int  # the chunk's own stamp, the old owner's wall clock
    # The publisher is known to have stopped there (our own run of the Space, given up):
    # nothing to add for the time since.
    final: bool = False

    def as_list(self) -> list[int]:
        """As a heartbeat carries it."""
        return [self.seq, self.pts, self.sent_us]

    @classmethod
    def from_list(cls, values: list[int]) -> Ahead | None:
        """From a heartbeat's ``[seq, pts, sent_us]``; None if it is not that."""
        if len(values) != 3 or any(v < 0 for v in values):
            return None
        return cls(values[0], values[1], values[2])


def first_number(stored: Chunk | None, ahead: Ahead | None, now_us: int, *,
                 chunk_samples: int, contested: bool = False) -> tuple[int, int] | None:
    """(seq, pts) for a new owner's first chunk, or None to keep its own (nothing
    stored, nothing reported: a new Space starts at zero).

    ``stored``: the Space's newest stored chunk; ``ahead``: the old owner's last report
    of unstored chunks (ignored once a chunk past it was stored after it was made);
    ``contested``: the old owner is alive (it stored a chunk while we were claiming, or
    its heartbeat says it mixes the Space), and one more chunk of its own may be on its
    way (refused by the stream, but delivered to plain subscribers all the same): skip
    that number too."""
    if ahead is not None and stored is not None and stored.seq > ahead.seq \
            and stored.sent_us > ahead.sent_us + SKEW_US:
        ahead = None  # a later owner stored past the report: it numbered past it already
    if stored is None and ahead is None:
        return None
    seq, pts = -1, 0
    if stored is not None:
        seq, pts = stored.seq, stored.pts + stored.duration_samples - chunk_samples
    if ahead is not None:
        chunk_us = chunk_samples * 1_000_000 // SAMPLE_RATE
        could = ahead.seq if ahead.final else \
            ahead.seq + max(0, now_us - ahead.sent_us + SKEW_US) // chunk_us
        if could > seq:
            seq, pts = could, ahead.pts + (could - ahead.seq) * chunk_samples
    if contested:
        seq, pts = seq + 1, pts + chunk_samples
    return seq + 1, pts + chunk_samples


@dataclass
class RivalReports:
    """What the other stages' heartbeats said about the Spaces they mix; time passed in.

    ``ahead``: per Space, the highest unstored chunk any stage reported (ours too, for a
    Space we gave up), kept after its owner stops reporting the Space (that is when a
    takeover needs it) until we store past it or the Space ends; ``first_number`` ignores
    it once a later owner stored past it. ``mixing``: which Spaces each stage said it
    mixes, and when, so a lease that lapsed while its holder still mixes (renewals
    unanswered, chunks still stored) is not taken from it."""

    ahead: dict[str, Ahead] = field(default_factory=dict)
    mixing: dict[str, tuple[frozenset[str], float]] = field(default_factory=dict)

    def heard(self, node: str, spaces: list[str], ahead: dict[str, list[int]],
              now: float, *, draining: bool = False) -> None:
        """A rival's heartbeat at ``now``."""
        self.mixing[node] = (frozenset() if draining else frozenset(spaces), now)
        for space, values in ahead.items():
            found = Ahead.from_list(values)
            if found is not None:
                self.note(space, found)

    def note(self, space: str, found: Ahead) -> None:
        """A report of unstored chunks (a rival's, or ours for a Space we gave up)."""
        known = self.ahead.get(space)
        if known is None or found.seq > known.seq:
            self.ahead[space] = found

    def floor(self, space: str) -> Ahead | None:
        """The highest unstored chunk reported for ``space``, if any."""
        return self.ahead.get(space)

    def forget(self, space: str) -> None:
        """We stored a chunk past the report (a claim), or the Space ended."""
        self.ahead.pop(space, None)

    def last_heard(self) -> float:
        """When a rival's heartbeat last reached us (monotonic; -inf: never)."""
        return max((at for _, at in self.mixing.values()), default=float("-inf"))

    def mixed_by(self, space: str, now: float, within_s: float) -> str | None:
        """A stage whose heartbeat in the last ``within_s`` said it mixes ``space``."""
        for node, (spaces, at) in self.mixing.items():
            if space in spaces and now - at <= within_s:
                return node
        return None
