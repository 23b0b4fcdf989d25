"""Where a joining listener starts: from the ring, from a JetStream replay, or at live."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

T = TypeVar("T")


class Source(Enum):
    """How the edge serves the listener's first chunks."""

    LIVE = "live"        # no `from`: start with the next live chunk
    RING = "ring"        # the ring still holds `from`: send ring[from:] then live
    REPLAY = "replay"    # older than the ring but within JetStream's window
    JUMP = "jump"        # nothing holds `from` (or it is in the future): skip to live


@dataclass(frozen=True)
class ResumePlan:
    """The decision plus what a replay needs."""

    source: Source
    start: int | None        # first sequence the listener will get (None: next live one)
    since_s: float = 0.0     # for REPLAY: how far back to read the stream


def plan_resume(from_seq: int | None, ring_first: int | None, ring_last: int | None,
                *, chunk_s: float = 0.1, replay_window_s: float = 55.0,
                margin_s: float = 2.0) -> ResumePlan:
    """Decide how to serve a listener asking to resume at ``from_seq``.

    ``ring_last`` is also the live sequence: the newest chunk this edge has seen.
    """
    if from_seq is None:
        return ResumePlan(Source.LIVE, None)
    if ring_first is None or ring_last is None:
        # Nothing seen yet: the edge just subscribed; JetStream may still have it.
        return ResumePlan(Source.REPLAY, from_seq, replay_window_s)
    if from_seq > ring_last + 1:
        return ResumePlan(Source.JUMP, None)
    if from_seq >= ring_first:
        return ResumePlan(Source.RING, from_seq)
    back_s = (ring_last - from_seq + 1) * chunk_s + margin_s
    if back_s > replay_window_s:
        return ResumePlan(Source.JUMP, None)
    return ResumePlan(Source.REPLAY, from_seq, back_s)


def stitch(from_seq: int, replayed: list[tuple[int, T]], held: list[tuple[int, T]]
           ) -> list[tuple[int, T]]:
    """The catch-up a resuming listener gets: the newest gap-free run of chunks from
    ``from_seq`` on, out of a JetStream replay and the ring (duplicates dropped, in order).

    A replay can come back short (a fetch timed out on a loaded edge, the stream aged out)
    and the ring may start later than the replay ends; chunks from before such a hole
    cannot be followed by the ones after it without a silent gap, so they are left out and
    the listener is told it jumped to the first chunk returned (``result[0][0]``).
    """
    merged: dict[int, T] = {}
    for seq, item in [*replayed, *held]:
        if seq >= from_seq:
            merged.setdefault(seq, item)
    run: list[tuple[int, T]] = []
    for seq in sorted(merged, reverse=True):
        if run and seq != run[-1][0] - 1:
            break
        run.append((seq, merged[seq]))
    run.reverse()
    return run
