"""Standard Webhooks signatures (https://www.standardwebhooks.com/): HMAC-SHA256 over
``<webhook-id>.<webhook-timestamp>.<body>`` with the endpoint's secret, sent as
``webhook-signature: v1,<base64>``. Secrets are ``whsec_`` + base64 of the key bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the spec: between 24 and 64 bytes
MAX_KEY_BYTES = 64


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_...`` secret; ValueError if it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret's key is {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class Signer:
    """Signs deliveries for one endpoint (one or, while rotating, several secrets)."""

    keys: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def from_secrets(cls, *secrets: str) -> Signer:
        """A signer for the given ``whsec_`` secrets (several while rotating)."""
        return cls(keys=tuple(parse_secret(s) for s in secrets))

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: ``v1,<sig>`` per key, space-separated."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
            for key in self.keys)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three headers of one delivery attempt (the timestamp is the attempt's)."""
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": self.signature(msg_id, timestamp, body),
                "content-type": "application/json"}
