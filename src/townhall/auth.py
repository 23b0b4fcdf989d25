"""Access tokens (JWT, HS256) and the grants they carry.

A token names an identity and display name, may be limited to one Space, and caps the
role its holder may take there: host > speaker > listener. A guest token (open mode's
``POST /sessions``) says so (``guest``) and carries ``net``, a keyed hash of the network it
was minted from, so that a block can outlast the guest's next fresh identity.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from townhall.problems import Unauthorized

log = logging.getLogger(__name__)

ROLES = ("listener", "speaker", "host")
ISSUER = "townhall"
DEFAULT_TTL = 24 * 3600
MAX_NAME = 64
_IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


def role_rank(role: str) -> int:
    """Order roles so a grant can be compared with what is asked."""
    return ROLES.index(role)


@dataclass(frozen=True)
class Identity:
    """Who a verified token says the caller is; what that allows is townhall.grants'."""

    id: str
    name: str
    space: str | None
    role: str
    expires: int
    guest: bool = False
    net: str | None = None


def valid_identity(value: str) -> bool:
    """Whether ``value`` may be an identity (a token's subject): 1 to 64 letters, digits
    and ``_.:@-``."""
    return bool(_IDENTITY_RE.fullmatch(value))


def network_of(address: str) -> bytes | None:
    """The network a client address stands for: the IPv4 address itself, an IPv6 /64 (one
    subscriber's usual allocation). None for loopback (this machine: every local guest
    would share it) and for anything that is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.packed[:8]
    return ip.packed


class TokenIssuer:
    """Mints and verifies tokens with one shared secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 bytes")
        self._secret = secret

    def net_tag(self, address: str) -> str | None:
        """A keyed hash of the client's network (see network_of): equal for one network,
        meaningless without the secret, so it can sit in a token and a Space's internal
        keys without recording the address itself."""
        net = network_of(address)
        if net is None:
            return None
        return hmac.new(self._secret, b"townhall-net\0" + net, hashlib.sha256).hexdigest()[:20]

    def derive_key(self, purpose: str) -> bytes:
        """A key for another signature (e.g. replay tickets), derived from the secret so
        that no signature of one kind passes for another."""
        return hmac.new(self._secret, b"townhall-key\0" + purpose.encode(),
                        hashlib.sha256).digest()

    def mint(self, identity: str, name: str, *, space: str | None = None,
             role: str = "host", ttl: int = DEFAULT_TTL, now: float | None = None,
             guest: bool = False, net: str | None = None) -> str:
        """A signed access token for ``identity``; raises ValueError for an unknown role or a
        malformed identity."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if not valid_identity(identity):
            raise ValueError(f"bad identity {identity!r}")
        issued = int(now if now is not None else time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "sub": identity,
            "name": name[:MAX_NAME],
            "role": role,
            "iat": issued,
            "exp": issued + ttl,
        }
        if space is not None:
            claims["space"] = space
        if guest:
            claims["guest"] = True
        if net is not None:
            claims["net"] = net
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str, *, now: float | None = None) -> Identity:
        """The identity a token carries, or Unauthorized (expired, forged, malformed)."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"], "verify_exp": now is None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired", slug="token-expired") from exc
        except jwt.PyJWTError as exc:
            # PyJWT's text names its internals; it goes to the log, not to the client.
            log.debug("refused an access token: %s", exc)  # debug: cheap to provoke
            raise Unauthorized("the access token is invalid", slug="token-invalid") from exc
        if now is not None and claims["exp"] <= now:
            raise Unauthorized("the access token has expired", slug="token-expired")
        role = claims.get("role", "listener")
        if role not in ROLES or not isinstance(claims.get("sub"), str):
            raise Unauthorized("the access token carries an unknown grant", slug="token-invalid")
        net = claims.get("net")
        return Identity(id=claims["sub"], name=str(claims.get("name", claims["sub"])),
                        space=claims.get("space"), role=role, expires=int(claims["exp"]),
                        guest=claims.get("guest") is True,
                        net=net if isinstance(net, str) else None)

    def from_header(self, authorization: str | None) -> Identity:
        """Verify an ``Authorization: Bearer`` header value."""
        if not authorization:
            raise Unauthorized("an Authorization: Bearer token is required",
                               slug="token-missing")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <token>", slug="token-invalid")
        return self.verify(token.strip())


def load_or_create_secret(data_dir: Path) -> bytes:
    """The token secret, created on first run with mode 0600."""
    path = data_dir / "token-secret"
    env = os.environ.get("TOWNHALL_TOKEN_SECRET")
    if env:
        return env.encode()
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    tmp = path.with_name(f".token-secret.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    try:
        os.link(tmp, path)  # atomic: the first process to start wins, others read its secret
    except FileExistsError:
        secret = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return secret
