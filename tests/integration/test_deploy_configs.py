"""`townhall deploy`'s files are what nats-server and systemd accept (`nats-server -t`,
`systemd-analyze verify`). That the generated cluster runs (three nodes routed over TLS,
an edge machine's leaf node with its edges, each role held to its subjects) is shown
across network namespaces by tests/netns/test_leaf.py, from the same files and units."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.certs import ThrowawayCA
from townhall.bus.embedded import nats_server_binary
from townhall.deploy.plan import Layout, Plan, parse_plan
from townhall.deploy.render import Secrets, host_files

pytestmark = pytest.mark.timeout(120)

# Loopback addresses of their own, so that three "hosts" use the standard ports at once.
HOSTS: dict[str, list[dict[str, object]]] = {"hosts": [
    {"name": "h1", "address": "127.0.0.11", "roles": ["nats", "api", "edge"]},
    {"name": "h2", "address": "127.0.0.12", "roles": ["nats", "stage", "edge"]},
    {"name": "h3", "address": "127.0.0.13", "roles": ["nats", "stage"], "stages": 2},
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
    confs = {str(h["name"]): install(root, ca, sec, str(h["name"]))[1] for h in HOSTS["hosts"]}
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
    checked: set[str] = set()
    for units in sorted(root.glob("*/etc/systemd/system")):
        # A template is verified through an instance of it, as the target starts it.
        names = sorted(p.name.replace("@.", "@1.") for p in units.glob("*.service"))
        names += sorted(p.name for p in units.glob("*.target"))
        r = subprocess.run(["systemd-analyze", "verify", *names], cwd=units,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 and not r.stderr.strip(), (units, r.stdout, r.stderr)
        checked.update(names)
    assert {"townhall-stage@1.service", "townhall-stage.target"} <= checked, checked
