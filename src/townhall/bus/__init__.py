"""Everything that speaks NATS: the embedded server and the one seam roles use."""

from townhall.bus.bus import Bus, CasConflict, Change, Entry, Subscription, Watch
from townhall.bus.credentials import NatsAuth

__all__ = ["Bus", "CasConflict", "Change", "Entry", "NatsAuth", "Subscription", "Watch"]
