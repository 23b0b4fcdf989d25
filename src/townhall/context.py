"""What every role in a process shares: settings, the bus, the token issuer, hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from townhall.auth import TokenIssuer
from townhall.bus import Bus
from townhall.settings import Settings

Hook = Callable[[], Awaitable[None]]


@dataclass
class Context:
    """Handed to each role plug-in; roles register start/stop hooks and health checks."""

    settings: Settings
    bus: Bus
    issuer: TokenIssuer
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    health: dict[str, Callable[[], bool]] = field(default_factory=dict)
