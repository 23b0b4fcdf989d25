"""The layout of a local cluster, with no I/O: which process gets which ports and flags."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from townhall.bus.permissions import authorization

ROUTE_USER = "route"


@dataclass
class NatsNode:
    """One nats-server of the cluster."""

    name: str
    port: int
    cluster_port: int
    store: str
    host: str = "127.0.0.1"  # the address it listens on and its peers route to

    def argv(self, binary: str) -> list[str]:
        """Flags without secrets; users and routes (with their password) are in the
        node's config file, see ``config``."""
        return [binary, "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store,
                "--server_name", self.name, "-c", self.config_path]

    @property
    def config_path(self) -> str:
        """The node's config file, in its store."""
        return str(Path(self.store) / "nats-server.conf")

    def config(self, peers: list[NatsNode], users: Mapping[str, str],
               route_password: str) -> dict[str, Any]:
        """The node's config: townhall's users, and routes to its peers that only nodes
        knowing ``route_password`` may open (else any local process could join the
        cluster and receive everything)."""
        routes = [f"nats://{ROUTE_USER}:{route_password}@{p.host}:{p.cluster_port}"
                  for p in peers if p is not self]
        return {"authorization": authorization(users),
                # A peer cut off by a partition sends no RST: without these its route (and
                # every client of it) looks alive for minutes while requests routed through
                # it are lost; with them it is dropped within ~3 s.
                "ping_interval": "1s", "ping_max": 3, "write_deadline": "2s",
                "cluster": {"name": "townhall", "listen": f"{self.host}:{self.cluster_port}",
                            "authorization": {"user": ROUTE_USER,
                                              "password": route_password},
                            "routes": routes}}

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"nats://{self.host}:{self.port}"


@dataclass
class Proc:
    """One townhall process: a role (or several) on a port."""

    name: str
    roles: str
    port: int
    extra: list[str] = field(default_factory=list)  # more flags, e.g. a stage's budget

    def argv(self, python: str, data: str, nats_urls: list[str], replicas: int,
             auth_file: str = "") -> list[str]:
        """The command line of this townhall process, pointed at the cluster's NATS nodes."""
        url = f"http://127.0.0.1:{self.port}"
        argv = [python, "-m", "townhall", "serve", "--roles", self.roles, "--port",
                str(self.port), "--nats", ",".join(nats_urls), "--data", data,
                "--public-url", url, "--replicas", str(replicas), "--node-id", self.name]
        if "stage" in self.roles.split(","):
            argv += ["--stages", "1"]  # one stage per process here: the plan counts them
        argv += self.extra
        if auth_file:  # a path: the process reads its role's password from it
            argv += ["--nats-auth-file", auth_file]
        return argv


@dataclass
class ClusterPlan:
    """Everything `townhall cluster up` starts, and where its logs go."""

    root: str
    nats: list[NatsNode] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def nats_urls(self) -> list[str]:
        """Every NATS node's URL, as the processes' ``--nats``."""
        return [n.url for n in self.nats]

    @property
    def replicas(self) -> int:
        """JetStream replicas: one per NATS node, at most three."""
        return min(3, len(self.nats))

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON, saved by ``townhall cluster start``."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClusterPlan:
        """A plan saved by ``to_json``."""
        return cls(root=raw["root"], nats=[NatsNode(**n) for n in raw["nats"]],
                   procs=[Proc(**p) for p in raw["procs"]], pids=dict(raw.get("pids", {})))


def make_plan(root: Path, *, nats_nodes: int, apis: int, edges: int, stages: int,
              port_for: Callable[[], int], stage_max_spaces: int | None = None
              ) -> ClusterPlan:
    """Lay out a cluster; ``port_for`` hands out free ports. Each stage is a process of
    its own, taking at most ``stage_max_spaces`` live Spaces (None: the default)."""
    if nats_nodes < 1 or apis < 1 or edges < 1 or stages < 1:
        raise ValueError("a cluster needs at least one of each: nats node, api, edge, stage")
    plan = ClusterPlan(root=str(root))
    for i in range(1, nats_nodes + 1):
        plan.nats.append(NatsNode(name=f"nats-{i}", port=port_for(), cluster_port=port_for(),
                                  store=str(root / f"nats-{i}")))
    budget = [] if stage_max_spaces is None else ["--stage-max-spaces", str(stage_max_spaces)]
    for role, count in (("api", apis), ("edge", edges), ("stage", stages)):
        for i in range(1, count + 1):
            plan.procs.append(Proc(name=f"{role}-{i}", roles=role, port=port_for(),
                                   extra=list(budget) if role == "stage" else []))
    return plan
