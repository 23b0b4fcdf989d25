"""The form of a WHIP session id, which the stage mints and the api checks; no I/O.

It sits beside the roles rather than in one of them because both need it, and neither role
imports the other.
"""

from __future__ import annotations

import re
import secrets

SESSION_ID = re.compile(r"[0-9a-f]{16}")


def new_session_id() -> str:
    """A WHIP session id as a stage mints them: 16 lowercase hex digits."""
    return secrets.token_hex(8)


def is_session_id(value: str) -> bool:
    """Whether ``value`` has the form of a session id (safe in a NATS subject or a URL)."""
    return SESSION_ID.fullmatch(value) is not None
