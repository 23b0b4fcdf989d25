"""Short-lived signed links to one Space's recording, with no I/O.

``<audio src>`` cannot send an ``Authorization`` header, so a private (or signed-in-only)
Space's replay page asks the api for a ticket (with its bearer token, townhall.grants
deciding) and puts it in the URL: ``/replay/<id>.opus?t=<ticket>``. A ticket names the
Space and the recording it was minted for (the recording's ``ready_at``, or ``live``
before it is ready) and expires within minutes; it is an HMAC under a key derived from the
token secret, so every api node checks it without asking anyone.

Wire form: ``<expires, unix seconds>.<recording tag>.<mac, 22 chars of base64url>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from townhall.problems import Unauthorized
from townhall.room.snapshot import Space

TTL_S = 600        # long enough to start a replay; the page mints another after that
MAX_TTL_S = 3600
_MAC_CHARS = 22    # 132 bits


def recording_tag(snap: Space) -> str:
    """What a ticket is bound to: the finished recording (its ``ready_at`` in ms), or
    ``live`` while there is none yet (clips of a live Space)."""
    rec = snap.finished
    return "live" if rec is None else str(int(rec.ready_at * 1000))


class Tickets:
    """Mints and checks tickets with one key (``TokenIssuer.derive_key("replay")``)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("ticket key must be at least 32 bytes")
        self._key = key

    def _mac(self, space: str, tag: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{space}\0{tag}\0{expires}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:_MAC_CHARS]

    def mint(self, space: str, tag: str, *, now: float, ttl: int = TTL_S) -> tuple[str, int]:
        """A ticket for ``space``'s recording ``tag``, and when it expires."""
        expires = int(now) + max(1, min(ttl, MAX_TTL_S))
        return f"{expires}.{tag}.{self._mac(space, tag, expires)}", expires

    def check(self, ticket: str, space: str, *, now: float) -> str:
        """The recording tag ``ticket`` admits to ``space``; Unauthorized if it was not
        minted for this Space, was altered, or has expired. Needs no lookup, so the
        answer says nothing about whether ``space`` exists."""
        expires_s, _, rest = ticket.partition(".")
        tag, _, mac = rest.rpartition(".")
        if not (expires_s.isdigit() and len(expires_s) <= 12 and tag and len(tag) <= 20
                and hmac.compare_digest(mac.encode(), self._mac(space, tag,
                                                                int(expires_s)).encode())):
            raise Unauthorized("this link is not valid for this recording",
                               slug="ticket-invalid")
        if int(expires_s) <= now:
            raise Unauthorized("this link has expired: open the page again",
                               slug="ticket-expired")
        return tag
