"""`townhall deploy`'s files are what nats-server and systemd accept (`nats-server -t`,
`systemd-analyze verify`), and the generated cluster runs: three nodes on loopback
addresses routed over TLS, an edge machine's leaf node, each role held to its subjects."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.certs import ThrowawayCA
from townhall.bus import Bus, NatsAuth, subjects
from townhall.bus.embedded import nats_server_binary, wait_for_port
from townhall.bus.tls import NatsTls
from townhall.deploy.plan import Layout, Plan, parse_plan
from townhall.deploy.render import Secrets, host_files
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(120)

# Loopback addresses of their own, so that three "hosts" use the standard ports at once.
HOSTS = {"hosts": [
    {"name": "h1", "address": "127.0.0.11", "roles": ["nats", "api", "edge"]},
    {"name": "h2", "address": "127.0.0.12", "roles": ["nats", "stage", "edge"]},
    {"name": "h3", "address": "127.0.0.13", "roles": ["nats", "stage"]},
    {"name": "e1", "address": "127.0.0.14", "roles": ["edge"]}]}


def install(root: Path, ca: ThrowawayCA, sec: Secrets, name: str) -> tuple[Plan, Path]:
    """Write host ``name``'s files under ``root/name`` as systemd would present them:
    what the nats unit loads as credentials in one directory. Returns its config."""
    base = root / name
    layout = Layout(etc=str(base / "etc"), state=str(base / "state"),
                    nats_credentials=str(base / "creds"),
                    townhall_bin=str(Path(sys.executable).parent / "townhall"),
                    nats_bin=nats_server_binary())
    plan = parse_plan(json.dumps(HOSTS), layout)
    host = plan.host(name)
    tls = Path(layout.tls)
    tls.mkdir(parents=True)
    shutil.copy(ca.path, tls / "ca.pem")
    cert = ca.issue(name, hosts=(host.address, name))
    shutil.copy(cert.cert, tls / f"{name}.pem")
    creds = Path(layout.nats_credentials)
    creds.mkdir(parents=True)
    shutil.copy(cert.key, creds / "nats-key.pem")
    for f in host_files(plan, host, sec):
        path = Path(f.path) if f.path.startswith(str(base)) else base / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text)
        if Path(f.path).name in ("nats-server.conf", "auth.conf", "leaf.conf"):
            (creds / Path(f.path).name).write_text(f.text)
    return plan, creds / "nats-server.conf"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], Secrets]:
    root = tmp_path_factory.mktemp("deploy")
    ca = ThrowawayCA(root / "ca")
    sec = Secrets.generate()
    confs = {h["name"]: install(root, ca, sec, str(h["name"]))[1] for h in HOSTS["hosts"]}
    return root, confs, sec


def test_nats_server_accepts_every_generated_config(
        deployed: tuple[Path, dict[str, Path], Secrets]) -> None:
    _, confs, _ = deployed
    for name, conf in confs.items():
        r = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)],
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0, (name, r.stdout, r.stderr)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_systemd_accepts_every_generated_unit(
        deployed: tuple[Path, dict[str, Path], Secrets]) -> None:
    root, _, _ = deployed
    for units in sorted(root.glob("*/etc/systemd/system")):
        names = sorted(p.name for p in units.glob("*.service"))
        r = subprocess.run(["systemd-analyze", "verify", *names], cwd=units,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 and not r.stderr.strip(), (units, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def cluster(deployed: tuple[Path, dict[str, Path], Secrets]) -> Iterator[None]:
    """The four nats-servers from the generated configs (monitor ports moved apart:
    on one machine they would all want 127.0.0.1:8222)."""
    _, confs, _ = deployed
    procs = []
    try:
        for i, (name, conf) in enumerate(confs.items()):
            conf.write_text(conf.read_text().replace("127.0.0.1:8222", f"127.0.0.1:{18222 + i}"))
            procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)],
                                          stdout=subprocess.DEVNULL,
                                          stderr=(conf.parent / "log").open("wb")))
            addr = next(h["address"] for h in HOSTS["hosts"] if h["name"] == name)
            wait_for_port("127.0.0.1" if name == "e1" else str(addr), 4222, 15, procs[-1])
        yield
    finally:
        for p in procs:
            stop_process(p, 10)


async def test_the_generated_cluster_runs_with_tls_leaf_and_permissions(
        cluster: None, deployed: tuple[Path, dict[str, Path], Secrets]) -> None:
    root, _, sec = deployed
    ca = NatsTls(ca=root / "h1" / "etc" / "tls" / "ca.pem")
    api_auth = NatsAuth(user="api", password=sec.passwords["api"])
    urls = [f"tls://127.0.0.1{i}:4222" for i in (1, 2, 3)]
    # The api creates the streams and buckets, replicated on the three nodes (which needs
    # the routes up: retried until JetStream has its quorum).
    api = None
    for _ in range(100):
        try:
            api = await Bus.connect(urls, auth=api_auth, tls=ca, replicas=3)
            break
        except Exception:
            await asyncio.sleep(0.2)
    assert api is not None, "the api never set up the replicated topology"
    try:
        await api.kv_create(subjects.SPACES_BUCKET, "abcdefghij", b'{"title": "Deployed"}')
        # An edge on the edge machine reads through its leaf node, as the edge user.
        edge = await Bus.connect(["nats://127.0.0.1:4222"], setup=False,
                                 auth=NatsAuth(user="edge", password=sec.passwords["edge"]))
        try:
            entry = None
            for _ in range(100):
                try:
                    entry = await edge.kv_get(subjects.SPACES_BUCKET, "abcdefghij")
                    break
                except Exception:
                    await asyncio.sleep(0.1)  # the leaf is still connecting to the hub
            assert entry is not None and json.loads(entry.value)["title"] == "Deployed"
        finally:
            await edge.close()
        # Still an edge there: it may not publish media.
        errors: list[Exception] = []

        async def collect(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect("nats://127.0.0.1:4222", user="edge",
                                password=sec.passwords["edge"], error_cb=collect,
                                allow_reconnect=False)
        try:
            await nc.publish(subjects.media("abcdefghij"), b"forged")
            await nc.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.05)
            assert any("permissions violation" in str(e).lower() for e in errors), errors
        finally:
            await nc.close()
        # Without the CA, a cluster node's client port refuses.
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.wait_for(nats.connect(urls[0], allow_reconnect=False,
                                                user="api", password=sec.passwords["api"]),
                                   10)
    finally:
        await api.close()


