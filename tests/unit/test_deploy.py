"""`townhall deploy`'s pure parts: the hosts file, each host's NATS config and units."""

from __future__ import annotations

import json
import re

import pytest

from townhall.bus.permissions import permissions_of
from townhall.deploy import natsconf, systemd
from townhall.deploy.plan import parse_plan
from townhall.deploy.render import Secrets, render

HOSTS = {"webhooks": True, "hosts": [
    {"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api", "edge"],
     "public_url": "https://h1.example.org"},
    {"name": "h2", "address": "10.0.0.2", "roles": ["nats", "stage", "edge"]},
    {"name": "h3", "address": "10.0.0.3", "roles": ["nats", "stage"], "stages": 3},
    {"name": "e1", "address": "10.0.0.4", "roles": ["edge"]}]}
PLAN = parse_plan(json.dumps(HOSTS))
SECRETS = Secrets.generate()


def files(host: str) -> dict[str, tuple[str, int]]:
    return {f.path: (f.text, f.mode) for f in render(PLAN, SECRETS)[host]}


def test_cluster_nodes_route_to_the_others_over_verified_tls() -> None:
    text = natsconf.server_config(PLAN, PLAN.host("h2"))
    assert "nats-route://10.0.0.1:6222" in text and "nats-route://10.0.0.3:6222" in text
    assert "nats-route://10.0.0.2" not in text
    cluster = text[text.index("cluster {"):text.index("leafnodes {")]
    assert "verify: true" in cluster
    assert 'store_dir: "/var/lib/townhall-nats"' in text
    assert 'include "auth.conf"' in text and "leaf.conf" not in text
    assert 'domain: "townhall"' in text


def test_an_edge_machine_gets_a_loopback_leaf_logging_in_as_an_edge() -> None:
    e1 = PLAN.host("e1")
    assert e1.leaf and not PLAN.host("h2").leaf
    text = natsconf.server_config(PLAN, e1)
    assert 'host: "127.0.0.1"' in text and "jetstream" not in text
    assert 'include "leaf.conf"' in text
    assert '"$JS.API.>": "$JS.townhall.API.>"' in text
    leaf = natsconf.leaf_config(PLAN, e1, SECRETS.passwords)
    assert f"tls://leaf:{SECRETS.passwords['leaf']}@10.0.0.1:7422" in leaf
    assert SECRETS.passwords["admin"] not in leaf
    # Its edges connect to it, not across the network.
    assert "--nats nats://127.0.0.1:4222" in systemd.role_unit(PLAN, e1, "edge")


def test_the_api_keeps_raft_leaders_on_the_nodes_of_hosts_without_a_stage() -> None:
    assert PLAN.leader_nodes == ("h1",)  # h2 and h3 run stages; e1 is no cluster node
    assert "--nats-leader-nodes h1" in systemd.role_unit(PLAN, PLAN.host("h1"), "api")
    assert "--nats-leader-nodes" not in systemd.role_unit(PLAN, PLAN.host("h2"), "edge")
    everywhere = parse_plan(json.dumps({"hosts": [
        {"name": n, "address": f"10.0.0.{i}", "roles": ["nats", "api", "stage"]}
        for i, n in enumerate(("a", "b", "c"), 1)]}))
    assert everywhere.leader_nodes == ()
    assert "--nats-leader-nodes" not in systemd.role_unit(everywhere, everywhere.host("a"),
                                                          "api")


def test_users_and_permissions_come_from_bus_permissions() -> None:
    auth = natsconf.auth_config(SECRETS.passwords)
    doc = json.loads(auth.removeprefix("authorization "))
    edge = next(u for u in doc["users"] if u["user"] == "edge")
    assert edge["password"] == SECRETS.passwords["edge"]
    publish = edge["permissions"]["publish"]["allow"]
    assert set(permissions_of("edge").publish) <= set(publish)
    # ...and the JetStream reads again in the cluster's domain, as a leaf maps them.
    assert "$JS.townhall.API.STREAM.INFO.*" in publish
    assert not any(s.startswith("townhall.") and s.endswith(".media") for s in publish)
    leaf = next(u for u in doc["users"] if u["user"] == natsconf.LEAF_USER)
    assert leaf["permissions"] == edge["permissions"]


def test_units_are_hardened_and_carry_no_secret() -> None:
    for host in PLAN.hosts:
        for path, (text, mode) in files(host.name).items():
            if not path.endswith(".service"):
                continue
            assert mode == 0o644
            for line in ("ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
                         "PrivateTmp=yes", "Restart=on-failure"):
                assert line in text, (path, line)
            assert re.search(r"^User=townhall-\w+$", text, re.M), path
            secrets = [*SECRETS.passwords.values(), SECRETS.token_secret]
            assert not any(s in text for s in secrets), path
    api = files("h1")["/etc/systemd/system/townhall-api.service"][0]
    assert "ReadWritePaths=/var/lib/townhall-api" in api
    assert "EnvironmentFile=/etc/townhall/townhall.env" in api
    assert "TOWNHALL_WEBHOOKS=%d/webhooks.json" in api
    assert "--public-url https://h1.example.org" in api
    edge = files("h1")["/etc/systemd/system/townhall-edge.service"][0]
    assert "LimitNOFILE=1048576" in edge and "--port 8081" in edge


def test_a_host_runs_as_many_stage_units_as_its_plan_says() -> None:
    """One template, an instance per stage process: each its own node id and state."""
    h3 = files("h3")
    template = h3["/etc/systemd/system/townhall-stage@.service"][0]
    assert "/etc/systemd/system/townhall-stage.service" not in h3
    assert "--node-id h3-stage-%i" in template and "--stages 1" in template
    assert "StateDirectory=townhall-stage-%i" in template
    assert "ReadWritePaths=/var/lib/townhall-stage-%i" in template
    assert "PartOf=townhall-stage.target" in template
    target = h3["/etc/systemd/system/townhall-stage.target"][0]
    wants = re.search(r"^Wants=(.*)$", target, re.M)
    assert wants is not None and wants.group(1).split() == [
        f"townhall-stage@{i}.service" for i in (1, 2, 3)]
    assert "WantedBy=multi-user.target" in target
    # The default is one stage process.
    assert "Wants=townhall-stage@1.service\n" in files("h2")[
        "/etc/systemd/system/townhall-stage.target"][0]
    assert not any("stage" in p for p in files("h1"))


def test_secrets_are_private_and_each_process_gets_its_own_password_only() -> None:
    h2 = files("h2")
    for path in ("/etc/townhall/townhall.env", "/etc/townhall/nats/auth.conf",
                 "/etc/townhall/nats-stage.json", "/etc/townhall/nats-edge.json"):
        assert h2[path][1] == 0o600, path
    assert json.loads(h2["/etc/townhall/nats-stage.json"][0]) == {
        "user": "stage", "password": SECRETS.passwords["stage"]}
    assert "/etc/townhall/nats-api.json" not in h2
    assert not any(p in h2["/etc/townhall/nats/nats-server.conf"][0]
                   for p in SECRETS.passwords.values())


def test_secrets_survive_a_regeneration() -> None:
    again = Secrets.from_json(SECRETS.to_json())
    assert again == SECRETS


@pytest.mark.parametrize(("hosts", "says"), [
    ([], "hosts"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["api"]}], "nats"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api"]},
      {"name": "h2", "address": "10.0.0.2", "roles": ["nats"]}], "quorum"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "edge"]}], "api"),
    ([{"name": "H_1", "address": "10.0.0.1", "roles": ["nats", "api"]}], "name"),
    ([{"name": "h1", "address": "h1.example.org", "roles": ["nats", "api"]}], "address"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "mixer"]}], "roles"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api"]},
      {"name": "h1", "address": "10.0.0.2", "roles": ["edge"]}], "differ"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api", "stage"],
       "stages": 0}], "stages must be"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api", "stage"],
       "stages": "4"}], "stages must be"),
    ([{"name": "h1", "address": "10.0.0.1", "roles": ["nats", "api"], "stages": 2}],
     "without the stage role"),
])
def test_bad_plans_are_refused(hosts: list[object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_plan(json.dumps({"hosts": hosts}))


def test_nodes_and_leaves_drop_a_cut_off_peer_within_seconds() -> None:
    # A partitioned host sends no FIN: only pings tell, and the default (2 min) left an
    # edge machine's leaf on a dead node, its listeners in silence, for minutes.
    for name in ("h1", "e1"):
        text = natsconf.server_config(PLAN, PLAN.host(name))
        for line in ('ping_interval: "1s"', "ping_max: 3", 'write_deadline: "2s"'):
            assert line in text, (name, line)
