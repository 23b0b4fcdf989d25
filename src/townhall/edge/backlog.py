"""One connection's bounded backlog: skip to live when full, close when it stays slow."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_LIMIT = 20       # chunks: ~2 s of audio at 100 ms per chunk
DEFAULT_MAX_SKIPS = 2    # skips within FORGIVE_AFTER delivered chunks before closing
FORGIVE_AFTER = 100      # ~10 s delivered in good order clears past skips


class Offer(Enum):
    """What happened to an offered chunk."""

    QUEUED = "queued"
    SKIPPED = "skipped"   # backlog dropped; the listener jumps ahead to this chunk
    CLOSE = "close"       # still too slow: close with a resume hint


@dataclass(frozen=True)
class Skip:
    """A jump the listener must be told about: chunks [from_seq, to_seq) were dropped."""

    from_seq: int
    to_seq: int


class Backlog(Generic[T]):
    """Chunks waiting to be written to one slow-or-fast connection."""

    def __init__(self, limit: int = DEFAULT_LIMIT, max_skips: int = DEFAULT_MAX_SKIPS) -> None:
        self.limit = limit
        self.max_skips = max_skips
        self._queue: deque[tuple[int, T]] = deque()
        self.skips = 0            # total, for metrics
        self._recent_skips = 0
        self._delivered_since_skip = 0
        self.pending_skip: Skip | None = None
        self.resume_from: int | None = None
        self._allowance = 0       # preloaded catch-up chunks that do not count as "behind"

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, seq: int, item: T) -> Offer:
        """Queue a chunk; past the limit, drop the backlog and keep only this one."""
        if self.resume_from is not None:
            return Offer.CLOSE
        if len(self._queue) < self.limit + self._allowance:
            self._queue.append((seq, item))
            return Offer.QUEUED
        oldest = self._queue[0][0]
        if self._recent_skips + 1 > self.max_skips:
            self.resume_from = oldest
            self._queue.clear()
            self._allowance = 0
            return Offer.CLOSE
        self._queue.clear()
        self._allowance = 0
        self._queue.append((seq, item))
        self.skips += 1
        self._recent_skips += 1
        self._delivered_since_skip = 0
        prior = self.pending_skip
        self.pending_skip = Skip(prior.from_seq if prior else oldest, seq)
        return Offer.SKIPPED

    def preload(self, items: list[tuple[int, T]]) -> None:
        """Queue a resuming listener's catch-up chunks beyond the limit, as a one-off."""
        self._queue.extend(items)
        self._allowance += len(items)

    def allow(self, n: int) -> None:
        """Let the next ``n`` chunks in past the limit: the edge held them, not the reader.

        Not cumulative (a reader that never reads still hits the limit)."""
        self._allowance = max(self._allowance, n)

    def take(self) -> tuple[int, T] | None:
        """The next chunk to write, oldest first."""
        if not self._queue:
            return None
        self._delivered_since_skip += 1
        if self._allowance:
            self._allowance -= 1
        if self._delivered_since_skip >= FORGIVE_AFTER:
            self._recent_skips = 0
        return self._queue.popleft()

    def delivered(self, n: int = 1) -> None:
        """``n`` chunks went out without queueing (the listener is keeping up)."""
        self._delivered_since_skip += n
        self._allowance = max(0, self._allowance - n)  # a held flush went out: no credit left
        if self._delivered_since_skip >= FORGIVE_AFTER:
            self._recent_skips = 0

    def take_skip(self) -> Skip | None:
        """The jump to announce before the next chunk, once."""
        skip, self.pending_skip = self.pending_skip, None
        return skip
