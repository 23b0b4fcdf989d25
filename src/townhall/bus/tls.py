"""TLS to NATS across hosts: the CA that signed the servers' certificates and, where the
servers ask for one, this process's own certificate. Paths only; the files stay files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NatsTls:
    """Client TLS for one connection; ``options()`` are nats-py's ``connect`` keywords."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """Verify the server against ``ca`` (and its name against the URL's host)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return ctx

    def options(self) -> dict[str, Any]:
        """The nats-py ``connect`` keyword arguments for this TLS setup."""
        return {"tls": self.context()}
