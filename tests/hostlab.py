"""The cluster of tests/netns/test_hosts.py on four namespace hosts (tests/netlab.py), shared
with bench/failover: the test checks that a failover is correct, the bench measures how long
it takes.

- ``cluster``: NATS on h1-h3 (JetStream R3, routes between the hosts' addresses, the role
  users of `townhall cluster up`), as a context manager; ``Cluster.serve`` starts a role.
- ``Scenario``: the roles spread over the hosts (api+edge on h1, a stage on h2, api+stage on
  h3, an edge on h4), a live Space with a 440 Hz speaker on h1, listeners on h1 and h4
  (each preferring its own host's edge) and a watch of the bus on h1; then its steps:
  ``partition`` (the owning stage's host cut off, healed) and ``host_loss`` (the owner's
  host killed outright), each returning when audio is back.
- What is measured: ``tone_back`` (per listener), ``timeline`` (where a failover's seconds
  went, from the watch and the logs), ``repeats``/``no_repeats`` (chunk numbers heard twice),
  ``takeovers`` (owner changes in an interval, from the watch), ``leaders_placed``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.netlab import Host, Lab, live_space
from townhall.bus.credentials import USERS_FILE, load_or_create_users, write_private
from townhall.bus.embedded import nats_server_binary
from townhall.bus.subjects import LEASE_TTL_S
from townhall.cluster.plan import NatsNode

ROOT = Path(__file__).resolve().parents[1]
NATS_PORT, ROUTE_PORT, HTTP_PORT = 4222, 6222, 8080
GAP_S = 0.5  # chunks come every 0.1 s: a longer pause is the failover's silence
LEADER_NODE = "nats-h1"  # the one NATS node on a host without a stage (as deploy/ says)

PROBE = """
import asyncio, json, sys, time
from pathlib import Path
from townhall.api.leaders import STREAMS
from townhall.bus import subjects
from townhall.bus.bus import NatsBus
from townhall.bus.credentials import admin_auth
urls, users, what = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
async def main():
    deadline = time.monotonic() + 40
    while True:
        try:
            bus = await asyncio.wait_for(NatsBus.connect(urls, auth=admin_auth(Path(users)),
                                                        replicas=3, name="probe"), 15)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                sys.exit(f"no JetStream: {exc!r}")
            await asyncio.sleep(1)
    while what == "leaders":  # where the streams a failover needs are led, as JSON
        try:
            found = {s: (await bus.stream_cluster(s)).leader for s in STREAMS}
        except Exception as exc:
            if time.monotonic() > deadline:
                sys.exit(f"no stream info: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        print(json.dumps(found))
        break
    while what not in ("ready", "leaders"):  # a bucket electing its leader answers 503
        try:
            entry = await bus.kv_get(subjects.LEASES_BUCKET, what)
        except Exception as exc:
            if time.monotonic() > deadline:
                sys.exit(f"no lease bucket: {exc!r}")
            await asyncio.sleep(0.5)
            continue
        print(entry.value.decode() if entry else "")
        break
    await bus.close()
asyncio.run(main())
"""

# One line per chunk heard: wall time, seq, pts, and whether it carries the 440 Hz tone.
LISTEN = """
import asyncio, json, sys, time
import numpy as np
from tests.tone import band_db
from townhall.client.listener import ResilientListener
from townhall.media.opus import OpusDecoder
base, space, out, edges = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
log = open(out, "a", buffering=1)
dec = OpusDecoder()
def on_chunk(c):
    pcm = np.concatenate([dec.decode(p) for p in c.packets])
    tone = band_db(pcm, 440) - band_db(pcm, 2500) > 20
    log.write(json.dumps([time.time(), c.seq, c.pts, tone]) + "\\n")
asyncio.run(ResilientListener(base, space, edges=edges, on_chunk=on_chunk).run(asyncio.Event()))
"""


# What the bus shows of a failover, seen from h1's NATS node only (never cut off nor killed:
# a client of a cut-off node would see nothing until it moved): one line per stored lease
# change (the owner's node, "" once deleted; refused writes are not stored, so a watch,
# not a subscription) and per chunk (its seq, whether stored or not).
TIMELINE = """
import asyncio, json, sys, time
from pathlib import Path
from townhall.bus import subjects
from townhall.bus.bus import NatsBus
from townhall.bus.credentials import admin_auth
from townhall.media.chunk import Chunk
url, users, space, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
log = open(out, "a", buffering=1)
def write(*row):
    log.write(json.dumps([time.time(), *row]) + "\\n")
async def main():
    bus = await NatsBus.connect([url], auth=admin_auth(Path(users)), setup=False,
                                name="timeline")
    def lease(change):
        if change.key == space:
            write("lease", (change.value or b"").decode())
    async def chunk(msg):
        write("chunk", Chunk.decode(msg.data).seq)
    await bus.kv_watch(subjects.LEASES_BUCKET, lease)
    await bus.subscribe(subjects.media(space), chunk)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class Cluster:
    lab: Lab
    hosts: dict[str, Host]
    tmp: Path
    nats_urls: list[str]
    users: Path

    def url(self, host: str, port: int = HTTP_PORT) -> str:
        return f"http://{self.hosts[host].addr}:{port}"

    def serve(self, host: str, roles: str, name: str, nats: list[str],
              port: int = HTTP_PORT) -> Path:
        h = self.hosts[host]
        log = self.tmp / f"{name}.log"
        argv = [sys.executable, "-m", "townhall", "serve", "--roles", roles,
                "--host", h.addr, "--port", str(port), "--public-url", f"http://{h.addr}:{port}",
                "--nats", ",".join(nats), "--nats-auth-file", str(self.users),
                "--data", str(self.tmp / "data"), "--replicas", "3", "--node-id", name,
                "--open", "--nats-leader-nodes", LEADER_NODE]
        h.popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        return log

    def probe(self, what: str) -> str:
        return self.run("h1", PROBE, ",".join(self.nats_urls), str(self.users), what).strip()

    def run(self, host: str, code: str, *args: str, bound_s: float = 120) -> str:
        """A Python snippet on ``host``, bounded; its stdout (it must succeed)."""
        proc = self.hosts[host].popen([sys.executable, "-c", code, *args], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=bound_s)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return out.decode()


def nats_configs(hosts: list[Host], tmp: Path, users_dir: Path) -> list[NatsNode]:
    """Configs as `townhall cluster up` writes them (role users, a route password), on the
    hosts' addresses."""
    users = load_or_create_users(users_dir)
    route_password = secrets.token_urlsafe(24)
    nodes = [NatsNode(name=f"nats-{h.name}", port=NATS_PORT, cluster_port=ROUTE_PORT,
                      store=str(tmp / f"nats-{h.name}"), host=h.addr) for h in hosts]
    for node in nodes:
        Path(node.store).mkdir(parents=True, mode=0o700)
        config = node.config(nodes, users, route_password)
        write_private(Path(node.config_path), json.dumps(config).encode())
    return nodes


@contextlib.contextmanager
def cluster(tmp_path: Path, *, show_logs: bool = True) -> Iterator[Cluster]:
    """NATS R3 on h1-h3 of a fresh four-host lab, JetStream ready; every namespace and
    process it made is gone when it exits. ``show_logs``: print each log's tail then."""
    with Lab() as lab:
        hosts = {n: lab.host(n) for n in ("h1", "h2", "h3", "h4")}
        (tmp_path / "data").mkdir()
        nodes = nats_configs([hosts["h1"], hosts["h2"], hosts["h3"]], tmp_path,
                             tmp_path / "data")
        binary = nats_server_binary()
        for node, h in zip(nodes, ("h1", "h2", "h3"), strict=True):
            hosts[h].popen(node.argv(binary), stdout=(tmp_path / f"{node.name}.log").open("wb"),
                           stderr=subprocess.STDOUT)
        made = Cluster(lab, hosts, tmp_path, [n.url for n in nodes],
                       tmp_path / "data" / USERS_FILE)
        made.probe("ready")  # JetStream's meta group elected, streams and buckets R3
        try:
            yield made
        finally:
            for log in sorted(tmp_path.glob("*.log")) if show_logs else []:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {log.name}\n" + "\n".join(tail))


def heard(path: Path) -> list[tuple[float, int, int, bool]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            t, seq, pts, tone = json.loads(line)
        except ValueError:
            continue  # a line being written
        rows.append((float(t), int(seq), int(pts), bool(tone)))
    return rows


def tone_back(path: Path, since: float, bound_s: float) -> float:
    """Seconds from ``since`` to the first of three toned chunks in a row heard after the
    gap that followed it (chunks already on their way at ``since`` do not count); bounded."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        rows = heard(path)
        before = [t for t, _, _, _ in rows if t <= since]
        last = before[-1] if before else since
        gap_over = False
        toned: list[float] = []  # the current run of toned chunks: one alone may be the
        for t, _, _, tone in rows:  # decoder's tail of the old owner's audio, not the speaker
            if t <= since:
                continue
            gap_over = gap_over or t - last > GAP_S
            last = t
            toned = [*toned, t] if gap_over and tone else []
            if len(toned) >= 3:
                return toned[0] - since
        time.sleep(0.1)
    raise AssertionError(f"no tone in {path.name} within {bound_s} s")


def leaders_placed(c: Cluster, bound_s: float = 30) -> float:
    """Seconds until the api has put every watched stream's leader on LEADER_NODE."""
    start = time.monotonic()
    while True:
        found = json.loads(c.probe("leaders"))
        if all(leader == LEADER_NODE for leader in found.values()):
            return time.monotonic() - start
        assert time.monotonic() - start < bound_s, f"leaders not on {LEADER_NODE}: {found}"
        time.sleep(0.5)


def owner(c: Cluster, space: str, bound_s: float = 20) -> str:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        node = c.probe(space)
        if node:
            return node
        time.sleep(0.5)
    raise AssertionError("no stage owns the Space")


def stamp_lines(proc: subprocess.Popen[bytes], out: Path) -> None:
    """Copy a process's output to ``out``, each line prefixed with the wall time it came."""
    def copy() -> None:
        assert proc.stdout is not None
        with out.open("w", buffering=1) as f:
            for line in proc.stdout:
                f.write(f"{time.time():.3f} {line.decode(errors='replace')}")
    threading.Thread(target=copy, daemon=True).start()


def first_after_gap(times: list[float], since: float) -> float | None:
    """The first time after ``since`` that ends a pause longer than GAP_S (the failover's
    silence), counted from the last one at or before ``since``."""
    before = [t for t in times if t <= since]
    last = before[-1] if before else since
    for t in times:
        if t > since:
            if t - last > GAP_S:
                return t
            last = t
    return None


def timeline(c: Cluster, since: float, old: str, logs: dict[str, Path]) -> dict[str, float]:
    """Where a failover's seconds went, each from ``since`` (the cut or the kill): the old
    owner's lease expiring (its last renewal + TTL), another stage taking it, the first
    chunk on the bus after the silence, the speaker noticing and coming back, and each
    listener's first chunk and first toned chunk."""
    rows = [json.loads(line) for line in (c.tmp / "timeline.jsonl").read_text().splitlines()
            if line.endswith("]")]
    leases = [(t, v) for t, kind, v in rows if kind == "lease"]
    out: dict[str, float] = {}
    renewed = [t for t, v in leases if t <= since and v == old]
    if renewed:
        out["old lease expires"] = renewed[-1] + LEASE_TTL_S - since
    taken = [t for t, v in leases if t > since and v not in ("", old)]
    if taken:  # as h1's watch saw it: late while the bucket elects a leader
        out["lease seen taken"] = taken[0] - since
    owns = [json.loads(line)["ts"] for log in (c.tmp / "h2-stage.log", c.tmp / "h3-api.log")
            for line in log.read_text(errors="replace").splitlines()
            if '"stage owns space"' in line]
    owns = sorted(t for t in owns if t > since)
    if owns:
        out["new owner's clock starts"] = owns[0] - since
    bus = first_after_gap([t for t, kind, _ in rows if kind == "chunk"], since)
    if bus is not None:
        out["first chunk on the bus"] = bus - since
    speak = [line.split(" ", 1) for line in (c.tmp / "speak.log").read_text().splitlines()]
    said = [(float(t), text) for t, text in speak if float(t) > since]
    live = [t for t, text in said if "live on" in text]
    back = live[0] if live else float("inf")
    retries = [(t, text) for t, text in said if "reconnecting" in text and t < back]
    if retries:
        out["speaker noticed"] = retries[0][0] - since
        out["speaker refusals (a count)"] = sum(1 for _, text in retries if "refused" in text)
    if live:
        out["speaker live again"] = back - since
    for at, path in logs.items():
        heard_at = first_after_gap([t for t, *_ in heard(path)], since)
        if heard_at is not None:
            out[f"first chunk on {at}"] = heard_at - since
    return out


def repeats(path: Path) -> tuple[int, int]:
    """How many chunk numbers a listener heard twice, and how many times they went back."""
    seqs = [seq for _, seq, _, _ in heard(path)]
    return len(seqs) - len(set(seqs)), sum(1 for a, b in itertools.pairwise(seqs) if b < a)


def no_repeats(path: Path) -> None:
    assert heard(path), path
    repeated, backwards = repeats(path)
    assert repeated == 0, f"{path.name}: {repeated} chunk numbers heard twice"
    assert backwards == 0, f"{path.name}: chunk numbers went backwards"


def longest_pause(path: Path, since: float, until: float) -> float:
    """The longest pause between two chunks a listener heard, for pauses ending between
    two wall times (0 when it heard none there)."""
    times = [t for t, *_ in heard(path)]
    return max((b - a for a, b in itertools.pairwise(times) if since < b <= until), default=0.0)


def takeovers(c: Cluster, since: float, until: float) -> int:
    """How many times the Space's lease changed hands between two wall times, as h1's watch
    saw it (an owner taking its own expired lease again is no change)."""
    rows = [json.loads(line) for line in (c.tmp / "timeline.jsonl").read_text().splitlines()
            if line.endswith("]")]
    owners = [(t, v) for t, kind, v in rows if kind == "lease" and v]
    before = [v for t, v in owners if t <= since]
    last, changes = (before[-1] if before else None), 0
    for t, v in owners:
        if since < t < until and v != last:
            changes, last = changes + (last is not None), v
    return changes


def near(c: Cluster, host: str) -> list[str]:
    """The NATS servers in the order a process on ``host`` lists them: its own host's first."""
    own = c.nats_urls[int(host[1]) - 1]
    return [own] + [u for u in c.nats_urls if u != own]


@dataclass
class Event:
    """One failover: when it began (wall time), the stage that owned the Space then, and the
    seconds from then to the tone at each listener."""
    since: float
    old: str
    tone_back: dict[str, float] = field(default_factory=dict)


@dataclass
class Scenario:
    """The roles spread over the cluster's hosts and a live Space heard on h1 and h4."""
    c: Cluster
    space: dict[str, str]
    logs: dict[str, Path]

    @classmethod
    def start(cls, c: Cluster) -> Scenario:
        """Roles, the Space, h1's watch of the bus, the speaker and both listeners; returns
        once both listeners hear the tone."""
        h = c.hosts
        c.serve("h1", "api,edge", "h1-api", near(c, "h1"))
        c.serve("h2", "stage", "h2-stage", near(c, "h2"))
        c.serve("h3", "api,stage", "h3-api", near(c, "h3"))
        c.serve("h4", "edge", "h4-edge", near(c, "h1"))
        space = live_space(h["h1"], c.url("h1"), "Hosts", bound_s=90)
        h["h1"].popen([sys.executable, "-c", TIMELINE, c.nats_urls[0], str(c.users),
                       space["space"], str(c.tmp / "timeline.jsonl")], cwd=ROOT,
                      stdout=(c.tmp / "timeline.log").open("wb"), stderr=subprocess.STDOUT)
        speaker = h["h1"].popen([sys.executable, "-m", "townhall", "speak", "--url",
                                 c.url("h1"), "--space", space["space"], "--token",
                                 space["token"], "--tone", "440", "--seconds", "300"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        stamp_lines(speaker, c.tmp / "speak.log")
        edges = {at: f"ws://{h[at].addr}:{HTTP_PORT}/ws/{space['space']}"
                 for at in ("h1", "h4")}
        logs = {}
        for at, other in (("h1", "h4"), ("h4", "h1")):
            logs[at] = c.tmp / f"heard-{at}.jsonl"
            h[at].popen([sys.executable, "-c", LISTEN, c.url("h1"), space["space"],
                         str(logs[at]), f"{edges[at]},{edges[other]}"], cwd=ROOT,
                        stdout=(c.tmp / f"listen-{at}.log").open("wb"),
                        stderr=subprocess.STDOUT)
        for at in logs:
            deadline = time.monotonic() + 90
            while not any(tone for *_, tone in heard(logs[at])):
                assert time.monotonic() < deadline, f"no tone on {at} within 90 s"
                time.sleep(0.2)
        return cls(c, space, logs)

    def partition(self, seconds: float = 20, bound_s: float = 60) -> tuple[Event, float]:
        """Cut the owning stage's host off for ``seconds`` and heal it; returns once another
        stage took over, the tone is back at both listeners (each within ``bound_s``) and the
        cut-off stage gave the Space up. The event and the wall time of the heal."""
        c, h = self.c, self.c.hosts
        first = owner(c, self.space["space"])
        cut = first.split("-")[0]  # h2-stage, or h3-api-stage: the child `serve` spawned
        h[cut].partition()
        event = Event(time.time(), first)
        for at in self.logs:
            event.tone_back[at] = tone_back(self.logs[at], event.since, bound_s)
        second = owner(c, self.space["space"])
        assert second != first
        time.sleep(max(0.0, event.since + seconds - time.time()))  # the partition lasts
        h[cut].heal()
        healed = time.time()
        stage_log = c.tmp / {"h2": "h2-stage.log", "h3": "h3-api.log"}[cut]
        deadline = time.monotonic() + 15
        while b"lost the Space" not in stage_log.read_bytes():
            assert time.monotonic() < deadline, "the cut-off stage never gave the Space up"
            time.sleep(0.2)
        time.sleep(3)  # listeners go on hearing the new owner after the heal, not the old one
        return event, healed

    def host_loss(self, bound_s: float = 60) -> Event:
        """Kill every process of the owner's host (its stage, its NATS node: quorum stays);
        returns once the tone is back at both listeners (each within ``bound_s``) and another
        stage owns the Space. (Usually the stage that took over after the partition; the
        rejoining node's churn can move it back.)"""
        c = self.c
        current = owner(c, self.space["space"])
        c.hosts[current.split("-")[0]].kill()
        event = Event(time.time(), current)
        for at in self.logs:
            event.tone_back[at] = tone_back(self.logs[at], event.since, bound_s)
        assert owner(c, self.space["space"]) != current
        return event


