"""The local cluster layout: ports, routes and flags, with no processes started."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from townhall.cluster.plan import ClusterPlan, make_plan


def _plan(**kw: int) -> ClusterPlan:
    ports = itertools.count(20000)
    args = {"nats_nodes": 3, "apis": 2, "edges": 3, "stages": 2, **kw}
    return make_plan(Path("/tmp/c"), port_for=lambda: next(ports), **args)


def test_every_port_is_distinct() -> None:
    plan = _plan()
    ports = [n.port for n in plan.nats] + [n.cluster_port for n in plan.nats]
    ports += [p.port for p in plan.procs]
    assert len(ports) == len(set(ports)) == 3 * 2 + 7


def test_routes_name_every_peer_but_self_and_carry_the_route_password() -> None:
    plan = _plan()
    node = plan.nats[0]
    config = node.config(plan.nats, {"admin": "a", "edge": "e"}, "route-pw")
    routes = config["cluster"]["routes"]
    assert sorted(routes) == sorted(f"nats://route:route-pw@127.0.0.1:{n.cluster_port}"
                                    for n in plan.nats[1:])
    assert config["cluster"]["listen"] == f"127.0.0.1:{node.cluster_port}"
    assert config["cluster"]["authorization"] == {"user": "route", "password": "route-pw"}
    assert {u["user"] for u in config["authorization"]["users"]} == {"admin", "edge"}


def test_no_secret_on_a_nats_node_command_line() -> None:
    plan = _plan()
    node = plan.nats[0]
    argv = node.argv("nats-server")
    assert "-js" in argv and argv[argv.index("--server_name") + 1] == "nats-1"
    assert argv[argv.index("-c") + 1] == node.config_path == "/tmp/c/nats-1/nats-server.conf"
    assert "--routes" not in argv and not any("route-pw" in a or "@" in a for a in argv)


def test_processes_point_at_every_nats_node_and_replicate() -> None:
    plan = _plan()
    edge = next(p for p in plan.procs if p.name == "edge-2")
    argv = edge.argv("python", "/d", plan.nats_urls, plan.replicas, auth_file="/d/u.json")
    assert argv[argv.index("--nats-auth-file") + 1] == "/d/u.json"
    assert argv[argv.index("--nats") + 1] == ",".join(plan.nats_urls)
    assert argv[argv.index("--roles") + 1] == "edge"
    assert argv[argv.index("--replicas") + 1] == "3"
    assert argv[argv.index("--public-url") + 1] == f"http://127.0.0.1:{edge.port}"
    assert argv[argv.index("--node-id") + 1] == "edge-2"


def test_replicas_never_exceed_nodes() -> None:
    assert _plan(nats_nodes=1).replicas == 1
    assert _plan(nats_nodes=5).replicas == 3


def test_round_trip_through_json() -> None:
    plan = _plan()
    plan.pids["nats-1"] = 42
    again = ClusterPlan.from_json(plan.to_json())
    assert again == plan


def test_a_cluster_needs_one_of_each() -> None:
    with pytest.raises(ValueError):
        _plan(stages=0)
