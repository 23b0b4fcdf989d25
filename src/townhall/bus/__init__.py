"""Everything that speaks NATS: the embedded server and the one seam roles use."""

from townhall.bus.bus import (
    UNREACHABLE,
    CasConflict,
    Change,
    Entry,
    Message,
    NatsBus,
    Subscription,
    Watch,
)
from townhall.bus.credentials import NatsAuth
from townhall.bus.seam import Bus

__all__ = ["UNREACHABLE", "Bus", "CasConflict", "Change", "Entry", "Message", "NatsAuth",
           "NatsBus", "Subscription", "Watch"]
