"""Budgets of the front door that a few sockets must not exhaust (Sans-I/O).

- ``PerAddress``: listener connections per client address at one edge.
- ``ConnectionCap``: open HTTP connections of one process that are not (yet) listeners.
- ``ReplayBudget``: joins that need a JetStream replay, per edge, and sharing one replay in
  flight per Space.

The limits come from the environment (documented in docs/operations.md); the shells
(edge/handoff.py, edge/connection.py, edge/hub.py) count and ask.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from enum import Enum

from townhall.edge.admission import TokenBucket

# A household or an office behind one NAT shares one address; a few hundred of its people
# in one edge's Spaces is plausible, thousands is a flood. Never more than a quarter of
# the edge's capacity, so that four addresses cannot fill it.
DEFAULT_PER_ADDRESS = 250
PER_ADDRESS_SHARE = 4
PER_ADDRESS_RETRY_S = 10

DEFAULT_HEADER_TIMEOUT_S = 10.0   # the whole request head, from connect (or the request's
#                                   first byte on a kept-alive connection)
DEFAULT_IDLE_TIMEOUT_S = 5        # a kept-alive connection with no request (uvicorn's own)
DEFAULT_MAX_CONNECTIONS = 1_000   # HTTP connections per process, listeners not counted
CONNECTIONS_RETRY_S = 5

LINGER_S = 2.0                    # drain a request body we answered early for at most this
LINGER_BYTES = 16 * 1024 * 1024   # ...and at most this many bytes (5 MB posts must fit)

DEFAULT_REPLAY_RATE = 2.0         # JetStream replays per second per edge
DEFAULT_REPLAY_BURST = 20.0


def _env_number(name: str, default: float, low: float) -> float:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if value < low:
        raise ValueError(f"{name} must be a number >= {low:g}, not {raw!r}")
    return value


def per_address_from_env(capacity: int) -> int:
    """Listener connections one client address may hold at this edge:
    TOWNHALL_EDGE_PER_ADDRESS, default 250 but at most a quarter of the capacity."""
    if os.environ.get("TOWNHALL_EDGE_PER_ADDRESS"):
        return int(_env_number("TOWNHALL_EDGE_PER_ADDRESS", DEFAULT_PER_ADDRESS, 1))
    return max(1, min(DEFAULT_PER_ADDRESS, capacity // PER_ADDRESS_SHARE))


def header_timeout_from_env() -> float:
    """Seconds a connection has to deliver a complete request head:
    TOWNHALL_HEADER_TIMEOUT_S (default 10)."""
    return _env_number("TOWNHALL_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S, 0.1)


def idle_timeout_from_env() -> int:
    """Whole seconds a kept-alive connection may wait for its next request:
    TOWNHALL_IDLE_TIMEOUT_S (default 5)."""
    return int(_env_number("TOWNHALL_IDLE_TIMEOUT_S", DEFAULT_IDLE_TIMEOUT_S, 1))


def max_connections_from_env() -> int:
    """Open HTTP connections per process, not counting listeners already handed to the
    edge: TOWNHALL_MAX_CONNECTIONS (default 1000)."""
    return int(_env_number("TOWNHALL_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1))


def replay_rate_from_env() -> tuple[float, float]:
    """JetStream replays per second and burst of one edge: TOWNHALL_EDGE_REPLAY_RATE
    (default 2) and TOWNHALL_EDGE_REPLAY_BURST (default 20)."""
    return (_env_number("TOWNHALL_EDGE_REPLAY_RATE", DEFAULT_REPLAY_RATE, 0.01),
            _env_number("TOWNHALL_EDGE_REPLAY_BURST", DEFAULT_REPLAY_BURST, 1))


@functools.lru_cache(maxsize=4096)
def counted(address: str) -> bool:
    """Whether listener connections from ``address`` count against the per-address cap:
    not from loopback (this machine: a load test, a reverse proxy not configured as
    trusted), as for the api's guest sessions; an unparsable address does count."""
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True


class PerAddress:
    """How many listener connections each client address holds; refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._held: dict[str, int] = {}

    def take(self, address: str) -> bool:
        """One more connection from ``address``, if it is under the limit."""
        held = self._held.get(address, 0)
        if held >= self.limit:
            return False
        self._held[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """A connection taken for ``address`` ended (forgotten at zero: no growth)."""
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)

    def held(self, address: str) -> int:
        """How many listener connections ``address`` holds now."""
        return self._held.get(address, 0)

    def __len__(self) -> int:
        """Addresses holding at least one connection."""
        return len(self._held)


class ConnectionCap:
    """Open connections of one process, against ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """A new connection: True if it fits (and is counted), False if over the cap."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """This connection is over: stop counting it."""
        self.open = max(0, self.open - 1)


class ReplayChoice(Enum):
    """How a join that needs JetStream is served."""

    SHARE = "shared"      # a replay of this Space in flight already reaches back far enough
    REPLAY = "replayed"   # a new replay, paid with a token
    LIVE = "refused"      # the budget is empty: start from what the edge holds, resumed=false


class ReplayBudget:
    """Replays from JetStream cost a token from one bucket per edge; a join whose start
    is covered by a replay of the same Space still in flight joins that one for free."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)

    def choose(self, now: float, reach_back_to: float, in_flight_from: float | None
               ) -> ReplayChoice:
        """``reach_back_to``: the wall-clock time the join's replay must start at;
        ``in_flight_from``: where the Space's replay in flight starts (None: none)."""
        if in_flight_from is not None and in_flight_from <= reach_back_to:
            return ReplayChoice.SHARE
        if self.bucket.take(now):
            return ReplayChoice.REPLAY
        return ReplayChoice.LIVE
