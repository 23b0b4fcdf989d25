"""When an owner gives up a Space whose lease renewals go unanswered, with no I/O.

The lease alone cannot tell a stage cut off from the cluster from one whose leases bucket
is re-electing its raft leader (a cut-off NATS node rejoining): both see renewals time
out. What tells them apart is what else still works. Fenced stores are the real guard
against two publishers (a successor's first stored chunk fences the owner, which stops at
once), and an owner that still hears the other stages' heartbeats is heard by them too, so
they leave its lapsed lease alone. A stage truly cut off can neither renew nor store, and
hears no one: it gives up as before, no later than its lease expires.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Upkeep:
    """The bounds (seconds)."""

    lease_ttl_s: float = 3.0       # a lease not renewed for this long has expired
    heard_within_s: float = 1.5    # a rival heard this recently: we are still connected
    unrenewed_max_s: float = 15.0  # and however well the rest works, no longer than this

    def give_up(self, now: float, *, renewed: float, stored: float | None,
                heard: float | None) -> bool:
        """Whether to stop a Space at ``now`` (all times monotonic): ``renewed`` when our
        last successful renewal was asked, ``stored`` our last fenced store's ack (None:
        the clock is not running yet), ``heard`` the last rival heartbeat (None: none)."""
        if now - renewed >= self.unrenewed_max_s:
            return True
        alive = renewed
        if stored is not None:
            alive = max(alive, stored)
            if heard is not None and now - heard < self.heard_within_s:
                return False
        return now - alive >= self.lease_ttl_s
