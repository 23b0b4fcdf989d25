"""The edge's gate: who may listen to what (townhall.grants), how many at once and from
one address, at what join rate; and ``EdgeNode``, what one edge process shares across its
listeners (its hub, that admission control)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from townhall import grants
from townhall.auth import Identity, TokenIssuer
from townhall.closecode import CloseCode
from townhall.edge import metrics
from townhall.edge.admission import Admission, Decision
from townhall.edge.guard import PER_ADDRESS_RETRY_S, PerAddress, per_address_from_env
from townhall.edge.hub import Hub
from townhall.problems import Problem
from townhall.room.snapshot import Space

# The default cap is where delivery stays at 100 ms with room left on the core for joins,
# state/levels frames and a noisy machine; the figures behind it are in docs/capacity.md
# ("The default cap, 5,000"), measured with bench/fanout (bench/README.md).
DEFAULT_CAPACITY = 5_000
DEFAULT_JOIN_RATE = 1_000.0
DEFAULT_INTERVAL_MS = 100



def capacity_from_env() -> int:
    """Listener cap of this edge: TOWNHALL_EDGE_CAPACITY (default 5000, measured)."""
    return int(os.environ.get("TOWNHALL_EDGE_CAPACITY", DEFAULT_CAPACITY))


def join_rate_from_env() -> float:
    """Joins per second this edge admits: TOWNHALL_EDGE_JOIN_RATE (default 1000)."""
    return float(os.environ.get("TOWNHALL_EDGE_JOIN_RATE", DEFAULT_JOIN_RATE))


def interval_floor_from_env() -> float:
    """The finest delivery interval in seconds: TOWNHALL_EDGE_INTERVAL_MS (default 100; up
    to 1000, in steps of the edge's 100 ms tick). Coarser = fewer writes per listener and
    more delay; the pacer still coarsens from there under load."""
    raw = os.environ.get("TOWNHALL_EDGE_INTERVAL_MS", "")
    try:
        ms = float(raw) if raw else DEFAULT_INTERVAL_MS
    except ValueError:
        ms = -1.0
    if not 100 <= ms <= 1000:
        raise ValueError(f"TOWNHALL_EDGE_INTERVAL_MS must be 100..1000, not {raw}")
    return round(ms / 100) / 10


def parse_from(raw: str | None) -> int | None:
    """The ``from`` query parameter: absent, or a non-negative decimal sequence number."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20:
        raise ValueError(f"from must be a sequence number, not {raw[:40]!r}")
    return int(raw)


def verified(token: str | None, issuer: TokenIssuer) -> Identity | None:
    """What a valid token says, or None (no token, or one that does not verify: a stale
    token in a browser must not keep it from a public Space, and grants nothing)."""
    if not token:
        return None
    try:
        return issuer.verify(token)
    except Problem:
        return None


def token_identity(token: str | None, issuer: TokenIssuer) -> str | None:
    """The identity a valid token names, or None (no token, or one that does not verify)."""
    who = verified(token, issuer)
    return who.id if who is not None else None


@dataclass(frozen=True)
class Refusal:
    """Why a listener may not join: a WebSocket close code and the HTTP status."""

    code: int
    status: int
    slug: str
    detail: str


def may_listen(snap: Space | None, space: str, token: str | None,
               issuer: TokenIssuer) -> Refusal | None:
    """Whether a listener with ``token`` may hear this Space now."""
    return may_listen_as(snap, space, verified(token, issuer))


def may_listen_as(snap: Space | None, space: str,
                  who: Identity | None) -> Refusal | None:
    """Whether ``who`` (a verified token, or None) may hear this Space now: townhall.grants
    decides, as for every route; a private Space it may not see is no Space (4404)."""
    if snap is None or snap.id != space:
        return Refusal(CloseCode.NOT_FOUND, 404, "space-not-found", f"no Space {space}")
    try:
        grants.authorize(who, "listen", snap)
    except Problem as refused:
        return Refusal(CloseCode.for_status(refused.status),
                       refused.status, refused.instance_slug, refused.detail)
    if snap.state == "ended":
        return Refusal(CloseCode.ENDED, 410, "space-ended", "this Space has ended")
    return None


def may_react(snap: Space | None, who: Identity | None) -> bool:
    """Whether this listener's "react" messages count (decided once, when it joins)."""
    return snap is not None and grants.allows(who, "react", snap)


@dataclass
class EdgeNode:
    """Everything one edge process shares across its listeners."""

    hub: Hub
    issuer: TokenIssuer
    node: str
    url: str | None
    capacity: int = field(default_factory=capacity_from_env)
    join_rate: float = field(default_factory=join_rate_from_env)
    admission: Admission = field(init=False)
    # Admitted but not yet counted by the hub (between admit() and hub.join): counted
    # against the cap too, or a burst of joins awaiting their handshake all see the same
    # count and overshoot it.
    joining: int = 0
    per_address_limit: int | None = None   # None: TOWNHALL_EDGE_PER_ADDRESS or the default
    per_address: PerAddress = field(init=False)
    per_address_retry_s: int = PER_ADDRESS_RETRY_S

    def __post_init__(self) -> None:
        self.admission = Admission(self.capacity, self.join_rate, time.monotonic())
        self.per_address = PerAddress(self.per_address_limit
                                      or per_address_from_env(self.capacity))

    def hold(self, address: str) -> bool:
        """A listener connection from ``address`` (its own, or the one a trusted proxy
        forwarded for): False if that address holds all it may; else call ``let_go`` once
        the connection ends."""
        if self.per_address.take(address):
            metrics.PER_ADDRESS.set(len(self.per_address))
            return True
        metrics.REFUSALS.labels("per-address").inc()
        return False

    def let_go(self, address: str) -> None:
        """A connection from ``address`` ended: one slot back (see ``hold``)."""
        self.per_address.release(address)
        metrics.PER_ADDRESS.set(len(self.per_address))

    def admit(self) -> Decision:
        """Admission of one more listener now; if admitted, call joined() once it is in."""
        decision = self.admission.decide(self.hub.listeners() + self.joining,
                                         time.monotonic())
        if decision.admitted:
            self.joining += 1
        else:
            metrics.REFUSALS.labels(decision.reason).inc()
        return decision

    def joined(self) -> None:
        """An admitted listener is now counted by the hub (or gave up before it was)."""
        self.joining = max(0, self.joining - 1)
