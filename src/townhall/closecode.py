"""The close codes a listener socket ends with: one definition for the edge and its clients.

The 44xx codes mirror the HTTP status a plain request would have got (docs/protocol.md);
clients (the web player, `townhall listen`, storm) decide from them whether to retry,
resume, or stop.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Why the edge closed a listener's WebSocket (RFC 6455 private-use range 4000-4999)."""

    BAD_INPUT = 4400       # the query was malformed
    TOKEN_NEEDED = 4401    # this Space needs an access token
    FORBIDDEN = 4403       # the token does not grant listening, or its holder was removed
    NOT_FOUND = 4404       # no such Space
    TOO_SLOW = 4408        # the listener fell too far behind; the reason carries resume_from
    ENDED = 4410           # the Space ended
    TOO_MANY = 4429        # this address holds as many listener connections as it may
    FULL = 4503            # this edge is full; the reason carries retry_after

    @classmethod
    def for_status(cls, status: int) -> CloseCode:
        """The code mirroring a refusal's HTTP status (4000 + status); FORBIDDEN for a
        status no code mirrors."""
        try:
            return cls(4000 + status)
        except ValueError:
            return cls.FORBIDDEN
