"""Whether a key-value watch stalled, with no I/O (time passed in).

A watch is an ordered consumer on the bucket's stream. nats-py notices a silent one only
after two missed idle heartbeats (10 s) and re-creates it once, in the background: if
that request fails (a healed node's raft groups catching up answer ``10008``) the watch
stays silent until the next check, another 10 s. The api's WHIP lease checks and the
stages' placement read these watches, so the bus compares, every ``CHECK_S`` in which the
watch delivered nothing, the newest revision it delivered with the stream's last
sequence: still lacking, ``STALL_S`` later, the sequence it lacked then means stalled, and
the watch is started again from the newest values.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECK_S = 1.0   # how often the stream's last sequence is read
STALL_S = 2.0   # behind for this long: stalled (a write's delivery takes milliseconds)


@dataclass
class WatchLag:
    """The newest revision a watch delivered, and which stream sequence it has owed since
    when (a busy bucket is always a write or two ahead of its watch: only the sequence
    that was last when the watch first looked behind is waited for)."""

    seen: int = 0
    owed: int | None = None
    behind_since: float | None = None
    fresh: bool = False  # something was delivered since the last ``quiet()``

    def delivered(self, revision: int) -> None:
        """The watch delivered a change at ``revision``."""
        self.seen = max(self.seen, revision)
        self.fresh = True

    def quiet(self) -> bool:
        """Whether nothing was delivered since the last call: only then is the stream
        worth asking (a busy watch, like the leases' renewed every second, is alive, and
        the stream's leader is spared a request a second during a heal's elections)."""
        was_fresh, self.fresh = self.fresh, False
        return not was_fresh

    def stalled(self, stream_last: int, now: float, stall_s: float = STALL_S) -> bool:
        """The stream's last sequence, read at ``now``: whether the watch still lacks the
        sequence it owed ``stall_s`` ago. Delivering it (or being level) resets."""
        if self.owed is not None and self.seen >= self.owed:
            self.owed = self.behind_since = None
        if stream_last <= self.seen:
            return False
        if self.owed is None or self.behind_since is None:
            self.owed, self.behind_since = stream_last, now
            return False
        return now - self.behind_since >= stall_s

    def restarted(self, stream_last: int | None) -> None:
        """The watch is (re)started when the stream's last sequence is ``stream_last``
        (None: unknown): what the stream holds comes with its initial values, what it no
        longer holds (expired) never comes, so only later writes are waited for."""
        self.owed = self.behind_since = None
        if stream_last is not None:
            self.seen = max(self.seen, stream_last)
