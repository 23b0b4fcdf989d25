"""Every file of a deployment, host by host, as (path, text, mode): a tree to copy onto
each host's root. Secrets are made once (``Secrets.generate``) and kept by the caller, so
that generating again changes no password."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from townhall.bus.permissions import user_names
from townhall.deploy import natsconf, systemd
from townhall.deploy.plan import Host, Plan


@dataclass(frozen=True)
class File:
    """One file to install: absolute path on the host, contents, permission bits."""

    path: str
    text: str
    mode: int = 0o644


@dataclass(frozen=True)
class Secrets:
    """The NATS users' passwords and the token secret, shared by every host."""

    passwords: dict[str, str] = field(repr=False)
    token_secret: str = field(repr=False)

    @classmethod
    def generate(cls) -> Secrets:
        """Fresh random passwords for every NATS user and a fresh token secret."""
        names = [*user_names(), natsconf.LEAF_USER]
        return cls(passwords={n: secrets.token_urlsafe(32) for n in names},
                   token_secret=secrets.token_hex(32))

    def to_json(self) -> str:
        """The secrets as JSON, to keep beside the plan."""
        return json.dumps({"passwords": self.passwords, "token_secret": self.token_secret},
                          indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Secrets:
        """Secrets kept by ``to_json``; a user a newer townhall knows gets a fresh password."""
        raw = json.loads(text)
        fresh = cls.generate()  # users a newer townhall knows get a password
        return cls(passwords={**fresh.passwords, **raw["passwords"]},
                   token_secret=str(raw["token_secret"]))


def host_files(plan: Plan, host: Host, sec: Secrets) -> list[File]:
    """What goes onto ``host``: configs, secrets (0600, root's), units."""
    etc, units = plan.layout.etc, "/etc/systemd/system"
    out: list[File] = []
    if host.nats_node or host.leaf:
        out += [File(f"{etc}/nats/nats-server.conf", natsconf.server_config(plan, host)),
                File(f"{etc}/nats/auth.conf",
                     natsconf.auth_config(sec.passwords, plan.cluster), 0o600),
                File(f"{units}/townhall-nats.service", systemd.nats_unit(plan, host))]
        if host.leaf:
            out.append(File(f"{etc}/nats/leaf.conf",
                            natsconf.leaf_config(plan, host, sec.passwords), 0o600))
    if host.townhall_roles:
        out.append(File(f"{etc}/townhall.env",
                        f"TOWNHALL_TOKEN_SECRET={sec.token_secret}\n", 0o600))
    for role in host.townhall_roles:
        # Each process gets its own user's password only, never the others'.
        login = {"user": role, "password": sec.passwords[role]}
        unit = "townhall-stage@.service" if role == "stage" else f"townhall-{role}.service"
        out += [File(f"{etc}/nats-{role}.json", json.dumps(login) + "\n", 0o600),
                File(f"{units}/{unit}", systemd.role_unit(plan, host, role))]
        if role == "stage":
            out.append(File(f"{units}/townhall-stage.target", systemd.stage_target(host)))
    return out


def render(plan: Plan, sec: Secrets) -> dict[str, list[File]]:
    """Every host's files, by host name."""
    return {h.name: host_files(plan, h, sec) for h in plan.hosts}
