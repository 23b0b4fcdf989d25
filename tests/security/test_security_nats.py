"""The embedded NATS of `townhall serve` talks only to holders of its generated
credentials, keeps them out of every command line, and holds each role to its subjects."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nkeys
import pytest
from nats.aio.client import Client

from tests.conftest import Served, spawn_townhall, start_townhall
from tests.waiting import until, until_async
from townhall.bus import NatsAuth, NatsBus, subjects
from townhall.bus.credentials import USERS_FILE, load_auth_file
from townhall.bus.embedded import CONFIG_FILE, EmbeddedNats
from townhall.bus.permissions import ROLES

pytestmark = pytest.mark.timeout(120)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    return [int(p) for p in out.split()]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def nats_address(served: Served) -> str:
    """The embedded server's URL, from the stage child's argv (a URL is no secret)."""
    for pid in children(served.proc.pid):
        argv = cmdline(pid)
        if "--nats" in argv:
            return argv[argv.index("--nats") + 1]
    raise AssertionError("no child of townhall serve was given --nats")


def passwords(served: Served) -> list[str]:
    users: dict[str, str] = json.loads((served.data / USERS_FILE).read_text())["users"]
    return list(users.values())


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


async def connect(url: str, auth: NatsAuth | None = None,
                  errors: list[Exception] | None = None) -> Client:
    async def collect(exc: Exception) -> None:
        if errors is not None:
            errors.append(exc)

    return await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                              connect_timeout=3, error_cb=collect,
                              **(auth.options() if auth else {}))


@pytest.fixture
async def admin(served: Served) -> AsyncIterator[Client]:
    nc = await connect(nats_address(served), served.nats_auth())
    yield nc
    await nc.close()


async def test_no_credentials_or_a_wrong_password_is_refused(served: Served) -> None:
    url = nats_address(served)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(url)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(url, NatsAuth(user="admin", password=secrets.token_urlsafe(32)))
    for auth in (served.nats_auth(), served.nats_auth("api", "edge"),
                 served.nats_auth("stage"), served.nats_auth("edge")):
        nc = await connect(url, auth)
        assert nc.is_connected
        await nc.close()


def test_credentials_config_and_store_are_private(served: Served) -> None:
    users = served.data / USERS_FILE
    config = served.data / "nats" / CONFIG_FILE
    assert users.stat().st_mode & 0o777 == 0o600
    assert config.stat().st_mode & 0o777 == 0o600
    # The config holds the passwords, and the store holds every Space's document.
    assert all(p in config.read_text() for p in passwords(served))
    assert (served.data / "nats").stat().st_mode & 0o077 == 0


def test_no_secret_on_any_command_line(served: Served) -> None:
    procs = [served.proc.pid, *children(served.proc.pid)]
    argvs = {pid: cmdline(pid) for pid in procs}
    stage = [a for a in argvs.values() if "--roles" in a and a[a.index("--roles") + 1] == "stage"]
    assert stage, "no stage child"
    assert stage[0][stage[0].index("--nats-auth-file") + 1] == str(served.data / USERS_FILE)
    assert any("nats-server" in a[0] for a in argvs.values()), "no nats-server child"
    for argv in argvs.values():
        joined = " ".join(argv)
        assert not any(p in joined for p in passwords(served)), argv


async def test_the_roles_connect_with_their_own_users(served: Served) -> None:
    """What each role does on the bus is allowed to it (the happy path of the permissions)."""
    url = nats_address(served)
    host = served.session("Ada")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Perms"}).json()["id"]
    edge = await NatsBus.connect([url], auth=served.nats_auth("edge"))
    stage = await NatsBus.connect([url], auth=served.nats_auth("stage"))
    try:
        doc = await edge.kv_get(subjects.SPACES_BUCKET, space)
        assert doc is not None and json.loads(doc.value)["title"] == "Perms"
        assert await edge.replay(subjects.MEDIA_STREAM, subjects.media(space),
                                 since_s=5, timeout=0.5) == []
        assert space in await stage.kv_keys(subjects.SPACES_BUCKET)
        probe = secrets.token_hex(5)
        await stage.kv_create(subjects.LEASES_BUCKET, probe, b"probe-stage")
        await stage.kv_delete(subjects.LEASES_BUCKET, probe)
    finally:
        await edge.close()
        await stage.close()


# (roles, subject it must not publish on, subject it may publish on) per case; both are
# watched by an admin subscription, and one publisher's messages arrive in order, so once
# the allowed one is in, the refused one would have been too.
FORBIDDEN = [
    (("edge",), "media", "stats"),
    (("edge",), "control", "stats"),
    (("stage",), "control", "levels"),
    (("stage",), "state", "levels"),
    (("api", "edge"), "media", "stats"),
    (("api",), "media", "state"),
]


def subject(kind: str, space: str) -> str:
    return {"media": subjects.media(space), "control": subjects.control(space),
            "state": subjects.state(space), "levels": subjects.levels(space),
            "stats": subjects.stats(space, "probe")}[kind]


@pytest.mark.parametrize(("roles", "refused", "allowed"), FORBIDDEN)
async def test_a_role_cannot_publish_outside_its_subjects(
        served: Served, admin: Client, roles: tuple[str, ...], refused: str,
        allowed: str) -> None:
    space = secrets.token_hex(5)  # no such Space: whatever gets through changes nothing
    heard: list[str] = []

    async def on_msg(msg: Any) -> None:
        heard.append(msg.subject)

    await admin.subscribe(f"townhall.{space}.>", cb=on_msg)
    await admin.flush()
    errors: list[Exception] = []
    nc = await connect(nats_address(served), served.nats_auth(*roles), errors)
    try:
        await nc.publish(subject(refused, space), b'{"type":"ended"}')
        await nc.publish(subject(allowed, space), b"{}")
        await nc.flush()
        await until_async(lambda: subject(allowed, space) in heard, 10, "the allowed message")
        assert subject(refused, space) not in heard
        await until_async(lambda: errors, 10, "the permissions violation")
        assert f'publish to "{subject(refused, space)}"' in str(errors[0])
    finally:
        await nc.close()


@pytest.mark.parametrize("roles", [("edge",), ("stage",)])
async def test_only_the_api_writes_a_space(served: Served, admin: Client,
                                           roles: tuple[str, ...]) -> None:
    host = served.session("Ada")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Mine"}).json()["id"]
    nc = await connect(nats_address(served), served.nats_auth(*roles), [])
    try:
        js = nc.jetstream(timeout=2)
        forged = json.dumps({"id": space, "title": "Forged", "state": "ended"}).encode()
        with pytest.raises((nats.errors.TimeoutError, nats.errors.Error)):
            await js.publish(subjects.kv_key(subjects.SPACES_BUCKET, space), forged)
        # Changing the bucket's stream (e.g. to source another subject into it) is refused.
        with pytest.raises((nats.errors.TimeoutError, nats.errors.Error)):
            await nc.request(f"$JS.API.STREAM.UPDATE.KV_{subjects.SPACES_BUCKET}", b"{}",
                             timeout=2)
    finally:
        await nc.close()
    entry = await (await admin.jetstream().key_value(subjects.SPACES_BUCKET)).get(space)
    assert json.loads(entry.value or b"{}")["title"] == "Mine"


async def test_external_nats_with_a_password_file(tmp_path: Path) -> None:
    """--nats-auth-file: the roles of `townhall serve --nats` (and its stage child) log in
    with a file's user and password; without it the server refuses them."""
    password = secrets.token_urlsafe(24)
    users = {"admin": password} | {role: secrets.token_urlsafe(24) for role in ROLES}
    server = EmbeddedNats(tmp_path / "nats", users=users)
    url = server.start()
    auth_file = tmp_path / "nats-auth.json"
    auth_file.write_text(json.dumps({"user": "admin", "password": password}))
    auth_file.chmod(0o600)
    served = None
    bare = spawn_townhall(tmp_path / "bare", "--nats", url)
    try:
        # Without the file both processes (the HTTP roles and the stage child) are refused,
        # and say so, and the server is not healthy.
        def refused(role: str) -> bool:
            return any('"role": "' + role in line and "Authorization Violation" in line
                       for line in bare.log.read_text(errors="replace").splitlines())

        until(lambda: refused("api+stage+edge") and refused("stage"), 30,
              "NATS refusing both processes without credentials")
        assert not healthy(bare)
        bare.stop()
        served = start_townhall(tmp_path / "data", "--nats", url,
                                "--nats-auth-file", str(auth_file))
        for pid in children(served.proc.pid):
            assert password not in " ".join(cmdline(pid))

        def stage_reports() -> bool:
            metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
            return "townhall_stage_report_age_seconds{" in metrics

        await until_async(stage_reports, 30, "the stage child's heartbeat")
    finally:
        bare.stop()
        if served is not None:
            served.stop()
        server.stop()


def healthy(served: Served) -> bool:
    try:
        return httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _keypair(prefix: int) -> Any:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(issuer: Any, subject: str, name: str, claims: dict[str, Any]) -> str:
    """A NATS JWT (v2) signed by ``issuer``, as nsc would write it."""
    body: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public_key.decode(),
                            "name": name, "sub": subject, "nats": {**claims, "version": 2}}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()) \
        .decode().rstrip("=")
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing}.{_b64(issuer.sign(signing.encode()))}"


def operator_mode(workdir: Path) -> tuple[Path, Path]:
    """A nats-server config in operator mode (one account with JetStream, one user) and
    that user's .creds file: what an operator's `nsc` setup hands out."""
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT), _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    accounts = {
        account.public_key.decode(): _jwt(operator, account.public_key.decode(), "townhall",
                                          {"type": "account",
                                           "limits": unlimited | jetstream}),
        system.public_key.decode(): _jwt(operator, system.public_key.decode(), "SYS",
                                         {"type": "account", "limits": unlimited}),
    }
    config = workdir / "operator.conf"
    config.write_text(json.dumps({
        "operator": _jwt(operator, operator.public_key.decode(), "op",
                         {"type": "operator",
                          "system_account": system.public_key.decode()}),
        "system_account": system.public_key.decode(),
        "resolver": "MEMORY", "resolver_preload": accounts}))
    user_jwt = _jwt(account, user.public_key.decode(), "townhall",
                    {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
                     "payload": -1})
    creds = workdir / "townhall.creds"
    creds.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT"
                     f"------\n\n-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"
                     "------END USER NKEY SEED------\n")
    creds.chmod(0o600)
    return config, creds


async def test_external_nats_with_a_creds_file(tmp_path: Path) -> None:
    """TOWNHALL_NATS_CREDS / --nats-creds: a .creds file (JWT + nkey seed) signs the
    roles' logins, the stage child's too; without it the server refuses."""
    config, creds = operator_mode(tmp_path)
    server = EmbeddedNats(tmp_path / "nats", extra_args=["-c", str(config)])
    url = server.start()
    served = None
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(url)
        served = start_townhall(tmp_path / "data", "--nats", url,
                                env={"TOWNHALL_NATS_CREDS": str(creds)})
        stage = [cmdline(pid) for pid in children(served.proc.pid)
                 if "--roles" in cmdline(pid)]
        assert stage and stage[0][stage[0].index("--nats-creds") + 1] == str(creds)

        def stage_reports() -> bool:
            metrics = httpx.get(f"{served.url}/metrics", timeout=5).text
            return "townhall_stage_report_age_seconds{" in metrics

        await until_async(stage_reports, 30, "the stage child's heartbeat")
    finally:
        if served is not None:
            served.stop()
        server.stop()


def route_refused(port: int, password: str) -> bool:
    """Whether a cluster port refuses a route that logs in with ``password``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(5)
        sock.recv(4096)  # INFO
        connect = {"verbose": False, "pedantic": False, "user": "route", "pass": password,
                   "tls_required": False, "name": "intruder"}
        sock.sendall(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        got = b""
        while b"\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return b"Authorization Violation" in got


def route_password(node: Any) -> str:
    config = json.loads(Path(node.config_path).read_text())
    return str(config["cluster"]["authorization"]["password"])


async def test_a_local_cluster_takes_credentials_too(tmp_path: Path) -> None:
    """`townhall cluster up`: clients and routes between the nodes need passwords; its
    processes log in with the users file and run."""
    from townhall.cluster import local

    # up() runs an event loop of its own: off this one
    plan = await asyncio.to_thread(local.up, tmp_path / "cluster", nats_nodes=2, apis=1,
                                   edges=1, stages=1, timeout=90)
    try:
        for node in plan.nats:
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await connect(node.url)
            assert route_refused(node.cluster_port, secrets.token_urlsafe(16))
        # the probe can tell: with the password a route is not refused
        assert not route_refused(plan.nats[1].cluster_port, route_password(plan.nats[0]))
        users = local.users_file(plan)
        assert users.stat().st_mode & 0o777 == 0o600
        for pid in plan.pids.values():
            assert not any(p in " ".join(cmdline(pid)) for p in
                           json.loads(users.read_text())["users"].values())
        nc = await connect(plan.nats_urls[0], load_auth_file(users, ["edge"]))
        await nc.close()
    finally:
        local.down(tmp_path / "cluster")
