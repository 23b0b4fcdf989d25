"""systemd units: one per role of a host (the stage a template, an instance per stage
process, started together by ``townhall-stage.target``), and one for its nats-server.
Each runs as its own user in a read-only system (``ProtectSystem=strict``) with only its
state directory writable; secrets reach it as files through ``LoadCredential=``
(readable by that service alone) or an ``EnvironmentFile=``, never on the command
line."""

from __future__ import annotations

import shlex

from townhall.deploy.natsconf import CLIENT_PORT
from townhall.deploy.plan import Host, Plan

HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
CapabilityBoundingSet=
UMask=0077
"""
DESCRIPTIONS = {"api": "control plane (HTTP API, web app, webhooks)",
                "stage": "media origin (WHIP ingest, mixer)",
                "edge": "listener fan-out"}
# Every listener is a socket: an edge's file limit is its listener limit.
NOFILE = {"api": 65536, "stage": 65536, "edge": 1048576}


def nats_urls(plan: Plan, host: Host) -> str:
    """Where ``host``'s processes find NATS: its own leaf on loopback, else the cluster
    over TLS, its own node first."""
    if host.leaf:
        return f"nats://127.0.0.1:{CLIENT_PORT}"
    nodes = sorted(plan.nats_nodes, key=lambda h: h is not host)
    return ",".join(f"tls://{h.address}:{CLIENT_PORT}" for h in nodes)


def role_unit(plan: Plan, host: Host, role: str) -> str:
    """``townhall-<role>.service`` for ``host``; for the stage, the template
    ``townhall-stage@.service`` whose instance ``%i`` numbers the stage process."""
    lay = plan.layout
    stage = role == "stage"
    # Each stage process its own node id (leases, heartbeats and metrics name it) and its
    # own state directory; %i is the instance: townhall-stage@2 is <host>-stage-2.
    state_dir = "townhall-stage-%i" if stage else f"townhall-{role}"
    state = f"{lay.state}/{state_dir}"
    node = f"{host.name}-stage-%i" if stage else f"{host.name}-{role}"
    argv = [lay.townhall_bin, "serve", "--roles", role, "--nats", nats_urls(plan, host),
            "--replicas", str(plan.replicas), "--node-id", node,
            "--data", state, "--host", host.address, "--port", str(_port(host, role))]
    if stage:
        # One process per unit: systemd is the only supervisor (docs/operations.md).
        argv += ["--stages", "1"]
    else:
        argv += ["--public-url", _public_url(host, role)]
    if role == "api" and plan.leader_nodes:
        argv += ["--nats-leader-nodes", ",".join(plan.leader_nodes)]
    env = [f"TOWNHALL_NATS_AUTH_FILE=%d/nats-{role}.json"]
    creds = [f"LoadCredential=nats-{role}.json:{lay.etc}/nats-{role}.json"]
    if not host.leaf:
        env.append(f"TOWNHALL_NATS_TLS_CA={lay.tls}/ca.pem")
    if role == "api" and plan.webhooks:
        creds.append(f"LoadCredential=webhooks.json:{lay.etc}/webhooks.json")
        env.append("TOWNHALL_WEBHOOKS=%d/webhooks.json")
    after = "townhall-nats.service" if host.nats_node or host.leaf else ""
    return f"""\
[Unit]
Description=townhall {role}{" %i" if stage else ""}: {DESCRIPTIONS[role]}
Documentation=https://github.com/townhall/townhall/blob/main/docs/operations.md
Wants=network-online.target {after}
After=network-online.target {after}
{"PartOf=townhall-stage.target" + chr(10) if stage else ""}
[Service]
Type=exec
User=townhall-{role}
Group=townhall-{role}
ExecStart={shlex.join(argv)}
# TOWNHALL_TOKEN_SECRET: the same on every host, so any process checks any token.
EnvironmentFile={lay.etc}/townhall.env
{chr(10).join(creds)}
Environment={" ".join(env)}
StateDirectory={state_dir}
StateDirectoryMode=0700
ReadWritePaths={state}
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
LimitNOFILE={NOFILE[role]}
{HARDENING}
[Install]
WantedBy={"townhall-stage.target" if stage else "multi-user.target"}
"""


def stage_target(host: Host) -> str:
    """``townhall-stage.target``: starts the host's ``stages`` stage instances together;
    each is restarted, stopped and logged on its own (``townhall-stage@<i>``)."""
    instances = " ".join(f"townhall-stage@{i}.service" for i in range(1, host.stages + 1))
    return f"""\
[Unit]
Description=townhall stages of {host.name} ({host.stages} processes)
Documentation=https://github.com/townhall/townhall/blob/main/docs/operations.md
Wants={instances}

[Install]
WantedBy=multi-user.target
"""


def nats_unit(plan: Plan, host: Host) -> str:
    """``townhall-nats.service``: the host's cluster node or leaf node."""
    lay = plan.layout
    creds = [f"LoadCredential=nats-server.conf:{lay.etc}/nats/nats-server.conf",
             f"LoadCredential=auth.conf:{lay.etc}/nats/auth.conf",
             f"LoadCredential=nats-key.pem:{lay.tls}/{host.name}-key.pem"]
    if host.leaf:
        creds.append(f"LoadCredential=leaf.conf:{lay.etc}/nats/leaf.conf")
    state = f"{lay.state}/townhall-nats"
    return f"""\
[Unit]
Description=NATS {'leaf node' if host.leaf else 'cluster node'} for townhall
Documentation=https://docs.nats.io/running-a-nats-service/configuration
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
User=townhall-nats
Group=townhall-nats
# The config and what it includes are read from the credentials directory (%d); a
# changed config takes a restart.
ExecStart={lay.nats_bin} -c %d/nats-server.conf
{chr(10).join(creds)}
StateDirectory=townhall-nats
StateDirectoryMode=0700
ReadWritePaths={state}
Restart=on-failure
RestartSec=2
# SIGTERM: nats-server flushes JetStream and leaves; give it the time.
TimeoutStopSec=60
LimitNOFILE=1048576
{HARDENING}
[Install]
WantedBy=multi-user.target
"""


def _port(host: Host, role: str) -> int:
    # api and edge on one host each need a port; the stage serves no HTTP.
    return host.port + (1 if role == "edge" and "api" in host.roles else 0)


def _public_url(host: Host, role: str) -> str:
    if host.public_url and not (role == "edge" and "api" in host.roles):
        return host.public_url
    return f"http://{host.address}:{_port(host, role)}"
