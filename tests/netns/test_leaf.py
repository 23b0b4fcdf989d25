"""An edge machine with a NATS leaf node, deployed as `townhall deploy` lays it out, on
hosts that are not loopback: NATS cluster nodes on h1-h3 (JetStream R3 in the cluster's
domain, TLS, the role users), the api on h1, a stage on h2, and on e1 a leaf node with
three edge processes connected to it on loopback. Every process runs the command line and
environment of its generated systemd unit (credentials copied where systemd would put
them), so the generated configs are what is tested.

Measured (printed with `pytest -s`, kept in bench/README.md): the messages that crossed
from the cluster into the leaf (its /leafz `in_msgs`) against the chunks the three edges
delivered, one listener each: each chunk crosses once per machine, not once per edge.
Listeners there hear continuous audio; a listener resuming on an edge that holds none of
the Space's chunks (as after its edge died) is served from JetStream through the leaf; an
edge's login is still refused media through the leaf, and the cluster refuses a client
without the CA. 25-40 s; it replaces the loopback run of the generated cluster that
tests/integration/test_deploy_configs.py did."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import ThrowawayCA
from tests.netlab import Host, Lab, live_space, why_unavailable
from townhall.bus.embedded import nats_server_binary
from townhall.deploy.plan import Layout, parse_plan
from townhall.deploy.render import Secrets, host_files

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240),
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}")]

ROOT = Path(__file__).resolve().parents[2]
EDGES = 3
EDGE_PORT = 8080  # + i on e1
WINDOW_CHUNKS = 50  # chunks each listener hears while the leaf is counted (about 5 s)

# Connect as admin (TLS, the cluster's CA) until JetStream has its quorum, and create the
# streams and buckets (R3) as `townhall serve` does with its embedded server's admin.
TOPOLOGY = """
import asyncio, sys, time
from pathlib import Path
from townhall.bus import NatsBus
from townhall.bus.credentials import load_auth_file
from townhall.bus.tls import NatsTls
urls, auth, ca = sys.argv[1].split(","), load_auth_file(Path(sys.argv[2])), Path(sys.argv[3])
async def main():
    deadline = time.monotonic() + 60
    while True:
        try:
            bus = await asyncio.wait_for(NatsBus.connect(urls, auth=auth, tls=NatsTls(ca=ca),
                                                        replicas=3, name="setup",
                                                        timeout=2), 15)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                sys.exit(f"no JetStream: {exc!r}")
            await asyncio.sleep(0.5)
    await bus.close()
asyncio.run(main())
"""

HEALTHY = """
import sys, time
import httpx
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        if httpx.get(sys.argv[1] + "/healthz", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{sys.argv[1]} not healthy in time")
    time.sleep(0.2)
"""

# One line per chunk heard: wall time, seq, whether it carries the 440 Hz tone.
LISTEN = """
import asyncio, json, sys, time
import numpy as np
from tests.tone import band_db
from townhall.client.listener import ResilientListener
from townhall.media.opus import OpusDecoder
edge, space, out = sys.argv[1], sys.argv[2], sys.argv[3]
log = open(out, "a", buffering=1)
dec = OpusDecoder()
def on_chunk(c):
    pcm = np.concatenate([dec.decode(p) for p in c.packets])
    tone = band_db(pcm, 440) - band_db(pcm, 2500) > 20
    log.write(json.dumps([time.time(), c.seq, tone]) + "\\n")
asyncio.run(ResilientListener(edge, space, edges=[edge], on_chunk=on_chunk).run(asyncio.Event()))
"""

# The leaf's view of its connection to the cluster: what came in from the hub.
LEAFZ = """
import json, urllib.error, urllib.request
try:
    leafs = json.load(urllib.request.urlopen("http://127.0.0.1:8222/leafz", timeout=5))["leafs"]
except (OSError, urllib.error.URLError):
    leafs = []  # the leaf node is not up yet
print(json.dumps({"connections": len(leafs), "in_msgs": sum(x["in_msgs"] for x in leafs),
                  "in_bytes": sum(x["in_bytes"] for x in leafs)}))
"""

# A listener that asks an edge for chunks from `from` on and reports what it got.
RESUME = """
import asyncio, json, sys
from websockets.asyncio.client import connect
from townhall.media.chunk import Chunk
url, want = sys.argv[1], int(sys.argv[2])
async def main():
    seqs, texts = [], []
    async with connect(url, open_timeout=10) as ws:
        while len(seqs) < want:
            data = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(data, bytes):
                seqs.append(Chunk.decode(data).seq)
            else:
                texts.append(json.loads(data))
    hello = next(t for t in texts if t.get("type") == "hello")
    print(json.dumps({"hello": hello, "seqs": seqs,
                      "jumps": [t for t in texts if t.get("type") == "jump"]}))
asyncio.run(main())
"""


# An edge's login on the leaf publishes a forged chunk: the leaf refuses it (the rights of
# auth.conf hold through the mapping); then a client without the CA tries the cluster.
REFUSED = """
import asyncio, json, sys
import nats
from townhall.bus import subjects
auth, cluster = json.load(open(sys.argv[1])), sys.argv[2]
async def main():
    errors = []
    async def collect(exc):
        errors.append(str(exc).lower())
    nc = await nats.connect("nats://127.0.0.1:4222", user=auth["user"],
                            password=auth["password"], error_cb=collect, allow_reconnect=False)
    await nc.publish(subjects.media("abcdefghij"), b"forged")
    await nc.flush()
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.05)
    await nc.close()
    try:
        await asyncio.wait_for(nats.connect(cluster, allow_reconnect=False,
                                            user=auth["user"], password=auth["password"]), 10)
        plain = "connected"
    except Exception as exc:
        plain = repr(exc)
    print(json.dumps({"errors": errors, "without_ca": plain}))
asyncio.run(main())
"""


# The chunk numbers the MEDIA stream holds for a Space (to explain a failed resume).
STORED = """
import asyncio, sys
from pathlib import Path
from townhall.bus import NatsBus, subjects
from townhall.bus.credentials import load_auth_file
from townhall.bus.tls import NatsTls
from townhall.media.chunk import Chunk
urls, auth = sys.argv[1].split(","), load_auth_file(Path(sys.argv[2]))
ca, space = sys.argv[3], sys.argv[4]
async def main():
    bus = await NatsBus.connect(urls, auth=auth, tls=NatsTls(ca=Path(ca)), setup=False)
    msgs = await bus.replay(subjects.MEDIA_STREAM, subjects.media(space), since_s=55)
    print([Chunk.decode(m.data).seq for m in msgs])
    await bus.close()
asyncio.run(main())
"""


@dataclass
class Deployed:
    """The hosts, each one's tree of generated files, and how to start its units."""

    lab: Lab
    hosts: dict[str, Host]
    tmp: Path
    layouts: dict[str, Layout]
    secrets: Secrets

    def unit(self, host: str, name: str, *extra: str, log: str = "") -> None:
        """Start ``name``'s ExecStart on ``host`` with the unit's environment and its
        credentials copied to a directory of its own (systemd's %d), plus ``extra`` flags."""
        lay = self.layouts[host]
        # An instance (townhall-stage@1.service) is its template with %i filled in.
        template, at, instance = name.partition("@")
        unit = f"{template}@.service" if at else name
        text = (self.tmp / host / "etc/systemd/system" / unit).read_text()
        text = text.replace("%i", instance.removesuffix(".service"))
        creds = Path(lay.nats_credentials) if name == "townhall-nats.service" else \
            self.tmp / host / "creds" / (log or name)
        creds.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        argv: list[str] = []
        for line in text.splitlines():
            key, _, value = line.partition("=")
            value = value.replace("%d", str(creds))
            if key == "LoadCredential":
                cred, _, source = value.partition(":")
                shutil.copy(source, creds / cred)
            elif key in ("EnvironmentFile", "Environment"):
                pairs = Path(value).read_text().splitlines() if key == "EnvironmentFile" \
                    else shlex.split(value)
                for pair in pairs:
                    var, eq, setting = pair.partition("=")
                    if eq:
                        env[var] = setting
            elif key == "ExecStart":
                argv = shlex.split(value)
        out = self.tmp / f"{host}-{log or name}.log"
        self.hosts[host].popen([*argv, *extra], env=env, stdout=out.open("wb"),
                               stderr=subprocess.STDOUT, cwd=ROOT)

    def run(self, host: str, code: str, *args: str, bound_s: float = 90) -> str:
        """A Python snippet on ``host``, bounded; its stdout (it must succeed)."""
        proc = self.hosts[host].popen([sys.executable, "-c", code, *args], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=bound_s)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return out.decode()

    def url(self, host: str, port: int = EDGE_PORT) -> str:
        return f"http://{self.hosts[host].addr}:{port}"


def install(hosts: dict[str, Host], tmp: Path) -> tuple[dict[str, Layout], Secrets]:
    """`townhall deploy` for these hosts, each host's files written under tmp/<host>/, with
    a certificate per host from a throwaway CA (the operator's job)."""
    roles = {"h1": ["nats", "api"], "h2": ["nats", "stage"], "h3": ["nats"], "e1": ["edge"]}
    text = json.dumps({"cluster": "townhall", "hosts": [
        {"name": n, "address": hosts[n].addr, "roles": r} for n, r in roles.items()]})
    ca = ThrowawayCA(tmp / "ca")
    sec = Secrets.generate()
    layouts = {}
    for name in roles:
        base = tmp / name
        lay = Layout(etc=str(base / "etc"), state=str(base / "state"),
                     nats_credentials=str(base / "creds" / "townhall-nats"),
                     townhall_bin=str(Path(sys.executable).parent / "townhall"),
                     nats_bin=nats_server_binary())
        layouts[name] = lay
        plan = parse_plan(text, lay)
        tls = Path(lay.tls)
        tls.mkdir(parents=True)
        shutil.copy(ca.path, tls / "ca.pem")
        cert = ca.issue(name, hosts=(hosts[name].addr, name))
        shutil.copy(cert.cert, tls / f"{name}.pem")
        shutil.copy(cert.key, tls / f"{name}-key.pem")
        for f in host_files(plan, plan.host(name), sec):
            path = Path(f.path) if f.path.startswith(str(base)) else base / f.path.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f.text)
            path.chmod(f.mode)
        Path(lay.state).mkdir(parents=True, exist_ok=True)
    return layouts, sec


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Deployed]:
    with Lab() as lab:
        hosts = {n: lab.host(n) for n in ("h1", "h2", "h3", "e1")}
        layouts, sec = install(hosts, tmp_path)
        made = Deployed(lab, hosts, tmp_path, layouts, sec)
        try:
            yield made
        finally:
            for log in sorted(tmp_path.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {log.name}\n" + "\n".join(tail))


def heard(path: Path) -> list[tuple[float, int, bool]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                t, seq, tone = json.loads(line)
            except ValueError:
                continue  # a line being written
            rows.append((float(t), int(seq), bool(tone)))
    return rows


def wait_heard(logs: list[Path], enough: int, bound_s: float, since: int = 0) -> None:
    """Until each listener has heard ``enough`` toned chunks numbered after ``since``."""
    deadline = time.monotonic() + bound_s
    while not all(sum(1 for _, seq, tone in heard(p) if tone and seq > since) >= enough
                  for p in logs):
        assert time.monotonic() < deadline, \
            f"listeners heard {[len(heard(p)) for p in logs]} chunks in {bound_s} s"
        time.sleep(0.2)


def test_an_edge_machine_behind_a_leaf_node(deployed: Deployed) -> None:
    d = deployed
    for host in ("h1", "h2", "h3", "e1"):  # cluster nodes, and e1's leaf node
        d.unit(host, "townhall-nats.service", log="nats")
    admin = d.tmp / "admin.json"
    admin.write_text(json.dumps({"user": "admin", "password": d.secrets.passwords["admin"]}))
    admin.chmod(0o600)
    hub = ",".join(f"tls://{d.hosts[h].addr}:4222" for h in ("h1", "h2", "h3"))
    d.run("h1", TOPOLOGY, hub, str(admin), str(Path(d.layouts["h1"].tls) / "ca.pem"))

    # The edges' first JetStream requests go through the leaf: wait for its hub connection
    # (under systemd an edge that came too early would be restarted; here it would fail).
    deadline = time.monotonic() + 30
    while json.loads(d.run("e1", LEAFZ))["connections"] < 1:
        assert time.monotonic() < deadline, "the leaf never connected to the cluster"
        time.sleep(0.2)

    d.unit("h1", "townhall-api.service", "--open", log="api")
    d.unit("h2", "townhall-stage@1.service", log="stage")
    edges = []
    for i in range(EDGES):
        port = EDGE_PORT + i
        d.unit("e1", "townhall-edge.service", "--port", str(port),
               "--public-url", d.url("e1", port), "--node-id", f"e1-edge{i}",
               "--data", str(d.tmp / "e1" / f"edge{i}"), log=f"edge{i}")
        edges.append(d.url("e1", port))
    space = live_space(d.hosts["h1"], d.url("h1"), "Leaf", bound_s=90)
    d.hosts["h1"].popen([sys.executable, "-m", "townhall", "speak", "--url", d.url("h1"),
                         "--space", space["space"], "--token", space["token"], "--tone", "440",
                         "--seconds", "200"], stdout=(d.tmp / "speak.log").open("wb"),
                        stderr=subprocess.STDOUT, cwd=ROOT)
    for url in edges:
        d.run("e1", HEALTHY, url, "90")
    logs = [d.tmp / f"heard-{i}.jsonl" for i in range(EDGES)]
    wss = [url.replace("http://", "ws://") + f"/ws/{space['space']}" for url in edges]

    def listen(i: int) -> None:
        d.hosts["e1"].popen([sys.executable, "-c", LISTEN, wss[i], space["space"],
                             str(logs[i])], cwd=ROOT, stderr=subprocess.STDOUT,
                            stdout=(d.tmp / f"listen-{i}.log").open("wb"))

    listen(0)
    listen(1)
    wait_heard(logs[:2], 10, 90)

    # Resume through the leaf: the last edge has no chunk of this Space yet (like an edge a
    # listener moves to when its own died), so what the listener missed comes from
    # JetStream, on the cluster, through the leaf. (A second back: a stage whose store ack
    # came late under load may have left a chunk out of the stream, never out of the air.)
    first = max(seq for _, seq, _ in heard(logs[0])) - 10  # a second ago
    want = 20
    got = json.loads(d.run("e1", RESUME, wss[2] + f"?from={first}", str(want)))
    if not got["hello"]["resumed"]:
        stored = d.run("h1", STORED, hub, str(admin), str(Path(d.layouts["h1"].tls) / "ca.pem"),
                       space["space"])
        pytest.fail(f"no resume through the leaf: {got}; the stream holds {stored}")
    assert got["hello"]["from"] == first, got
    assert got["seqs"] == list(range(first, first + want)), got
    assert not got["jumps"], got

    # Count: what crossed into the leaf while each listener heard WINDOW_CHUNKS chunks.
    listen(2)
    wait_heard(logs, 10, 60, since=max(seq for _, seq, _ in heard(logs[0])))
    before = json.loads(d.run("e1", LEAFZ))
    start = {p: max(seq for _, seq, _ in heard(p)) for p in logs}
    wait_heard(logs, WINDOW_CHUNKS, 60, since=max(start.values()))
    after = json.loads(d.run("e1", LEAFZ))
    end = {p: max(seq for _, seq, _ in heard(p)) for p in logs}
    assert after["connections"] == 1, after  # one connection from this machine
    delivered = {}
    for p in logs:
        window = [(seq, tone) for _, seq, tone in heard(p) if start[p] < seq <= end[p]]
        seqs = [seq for seq, _ in window]
        # Continuous: no chunk missing, none twice, in order; the tone all along.
        assert seqs == list(range(start[p] + 1, start[p] + 1 + len(seqs))), p.name
        assert sum(tone for _, tone in window) >= 0.95 * len(window), p.name
        delivered[p.name] = len(seqs)
    chunks = min(delivered.values())
    crossed = after["in_msgs"] - before["in_msgs"]
    figures = {"edges on the machine": EDGES,
               "chunks per listener (window)": chunks,
               "chunks the edges delivered": sum(delivered.values()),
               "messages into the leaf": crossed,
               "messages into the leaf per chunk": round(crossed / chunks, 2),
               "bytes into the leaf per chunk": round(
                   (after["in_bytes"] - before["in_bytes"]) / chunks),
               "resumed through the leaf, chunks from JetStream": want}
    for name, value in figures.items():
        print(f"{name}: {value}")
    # Each edge connected to the cluster on its own would pull every chunk: >= 3 per
    # chunk. Through the leaf: one per chunk, plus the small traffic that is not media
    # (speaker levels at most 4/s, state snapshots, the edges' key-value watches).
    assert crossed < 2 * chunks, figures

    # Still an edge's rights through the leaf; and no way into the cluster without TLS.
    edge_login = d.tmp / "e1" / "creds" / "edge0" / "nats-edge.json"
    refused = json.loads(d.run("e1", REFUSED, str(edge_login),
                               f"tls://{d.hosts['h1'].addr}:4222"))
    assert any("permissions violation" in e for e in refused["errors"]), refused
    assert "CERTIFICATE_VERIFY_FAILED" in refused["without_ca"], refused
