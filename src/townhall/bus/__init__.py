"""Everything that speaks NATS: the embedded server and the one seam roles use."""

from townhall.bus.bus import Bus, CasConflict, Entry, Subscription
from townhall.bus.credentials import NatsAuth

__all__ = ["Bus", "CasConflict", "Entry", "NatsAuth", "Subscription"]
