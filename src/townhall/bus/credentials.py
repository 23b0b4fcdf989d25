"""How a process proves who it is to NATS: the embedded server's generated users, or an
operator's ``.creds`` file, user/password or token file. Secrets live in files (mode 0600),
never on a command line: argv is readable by every local user in /proc."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from townhall.bus.permissions import ADMIN, user_for, user_names

log = logging.getLogger(__name__)

USERS_FILE = "nats-users.json"  # in the data directory: {"users": {name: password}}


@dataclass(frozen=True)
class NatsAuth:
    """Credentials for one connection; ``options()`` are nats-py's ``connect`` keywords."""

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    creds: Path | None = None  # a NATS .creds file (JWT + nkey seed)

    def options(self) -> dict[str, Any]:
        """The nats-py ``connect`` keyword arguments for these credentials."""
        if self.creds is not None:
            return {"user_credentials": str(self.creds)}
        if self.token:
            return {"token": self.token}
        if self.user:
            return {"user": self.user, "password": self.password}
        return {}


def parse_auth(text: str, roles: Iterable[str] = ()) -> NatsAuth:
    """An auth file's JSON: ``{"user", "password"}``, ``{"token"}``, or the embedded
    server's ``{"users": {name: password}}`` (then the user for ``roles``)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")
    if isinstance(raw.get("users"), dict):
        name = user_for(roles)
        password = raw["users"].get(name)
        if not isinstance(password, str):
            raise ValueError(f"no password for NATS user {name!r}")
        return NatsAuth(user=name, password=password)
    if isinstance(raw.get("token"), str) and raw["token"]:
        return NatsAuth(token=raw["token"])
    if isinstance(raw.get("user"), str) and isinstance(raw.get("password"), str):
        return NatsAuth(user=raw["user"], password=raw["password"])
    raise ValueError('expected {"user", "password"}, {"token"} or {"users": {...}}')


def admin_auth(users_file: Path) -> NatsAuth:
    """The ``admin`` user of an embedded users file: for tools, setup and tests."""
    return NatsAuth(user=ADMIN, password=json.loads(users_file.read_text())["users"][ADMIN])


def load_auth_file(path: Path, roles: Iterable[str] = ()) -> NatsAuth:
    """Read an auth file (see ``parse_auth``); warns when others may read it."""
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it", path)
    try:
        return parse_auth(path.read_text(), roles)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600 from the first byte (never a window in
    which the file exists with looser permissions)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_users(data_dir: Path) -> dict[str, str]:
    """The embedded server's users and passwords, created on first run with mode 0600.

    Like the token secret: written aside, then linked into place, so that of two processes
    starting at once the first wins and the other reads its file. Users a newer townhall
    knows and the file lacks are added; deleting the file rotates every password.
    """
    path = data_dir / USERS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fresh = {name: secrets.token_urlsafe(32) for name in user_names()}
        tmp = path.with_name(f".{USERS_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"users": fresh}, fh, indent=2)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    users: dict[str, str] = json.loads(path.read_text())["users"]
    missing = [name for name in user_names() if name not in users]
    if missing:
        users.update({name: secrets.token_urlsafe(32) for name in missing})
        write_private(path, json.dumps({"users": users}, indent=2).encode())
    return users
