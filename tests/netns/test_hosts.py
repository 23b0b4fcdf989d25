"""A cluster on four hosts that are not loopback: a NATS node on h1-h3 (JetStream R3,
routes between the hosts' addresses, the role users of `townhall cluster up`); api+edge on
h1, a stage on h2, api+stage on h3, an edge on h4. A tone speaker on h1, listeners on h1
and h4, each preferring its own host's edge. Every process lists its own host's NATS node
first, and the apis keep the raft leaders a takeover needs on nats-h1, the one node whose
host runs no stage (`--nats-leader-nodes`): checked at the start and again after the heal.

Then the owning stage's host is cut off for 20 s and healed, and the next owner's host is
killed outright: audio comes back each time (bound below), no listener hears a chunk
number twice, the cut-off stage stops mixing once it learns it lost the Space, and no
raft election holds the takeover up (the new owner starts within 5 s). Figures are printed
(`pytest -s`) and kept in bench/README.md. About a minute."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import hostlab
from tests.hostlab import (
    HTTP_PORT,
    LISTEN,
    ROOT,
    TIMELINE,
    Cluster,
    heard,
    leaders_placed,
    no_repeats,
    owner,
    stamp_lines,
    timeline,
    tone_back,
)
from tests.netlab import live_space, why_unavailable

pytestmark = [pytest.mark.netns, pytest.mark.timeout(420),
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}")]

TAKEOVER_BOUND_S = 5.0  # cut or kill -> the new owner's clock: lease TTL + upkeep + slack


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The four hosts and NATS R3 (tests/hostlab.py), each log's tail printed at the end."""
    with hostlab.cluster(tmp_path) as made:
        yield made


def test_partition_and_host_loss(cluster: Cluster) -> None:
    c = cluster
    h = c.hosts
    near = lambda host: [c.nats_urls[int(host[1]) - 1]] + [  # noqa: E731
        u for u in c.nats_urls if u != c.nats_urls[int(host[1]) - 1]]
    c.serve("h1", "api,edge", "h1-api", near("h1"))
    c.serve("h2", "stage", "h2-stage", near("h2"))
    c.serve("h3", "api,stage", "h3-api", near("h3"))
    c.serve("h4", "edge", "h4-edge", near("h1"))
    space = live_space(h["h1"], c.url("h1"), "Hosts", bound_s=90)
    h["h1"].popen([sys.executable, "-c", TIMELINE, c.nats_urls[0], str(c.users),
                   space["space"], str(c.tmp / "timeline.jsonl")], cwd=ROOT,
                  stdout=(c.tmp / "timeline.log").open("wb"), stderr=subprocess.STDOUT)
    speaker = h["h1"].popen([sys.executable, "-m", "townhall", "speak", "--url", c.url("h1"),
                             "--space", space["space"], "--token", space["token"],
                             "--tone", "440", "--seconds", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    stamp_lines(speaker, c.tmp / "speak.log")
    edges = {at: f"ws://{h[at].addr}:{HTTP_PORT}/ws/{space['space']}" for at in ("h1", "h4")}
    logs = {}
    for at, other in (("h1", "h4"), ("h4", "h1")):
        logs[at] = c.tmp / f"heard-{at}.jsonl"
        h[at].popen([sys.executable, "-c", LISTEN, c.url("h1"), space["space"], str(logs[at]),
                     f"{edges[at]},{edges[other]}"], cwd=ROOT,
                    stdout=(c.tmp / f"listen-{at}.log").open("wb"), stderr=subprocess.STDOUT)
    for at in logs:
        deadline = time.monotonic() + 90
        while not any(tone for *_, tone in heard(logs[at])):
            assert time.monotonic() < deadline, f"no tone on {at} within 90 s"
            time.sleep(0.2)
    figures: dict[str, float] = {}
    # The api moved the leaders of the streams a failover needs to the stage-less host.
    figures["leaders on nats-h1 (a check after start)"] = leaders_placed(c)

    # (b) the owning stage's host cut off for 20 s, then healed.
    first = owner(c, space["space"])
    cut = first.split("-")[0]  # h2-stage, or h3-api-stage: the child `serve` spawned
    h[cut].partition()
    t0 = time.time()
    for at in logs:
        figures[f"partition: tone back on {at}"] = tone_back(logs[at], t0, 60)
    steps = {"partition": (t0, first)}
    second = owner(c, space["space"])
    assert second != first
    time.sleep(max(0.0, t0 + 20 - time.time()))  # the partition lasts 20 s
    h[cut].heal()
    stage_log = c.tmp / {"h2": "h2-stage.log", "h3": "h3-api.log"}[cut]
    deadline = time.monotonic() + 15
    while b"lost the Space" not in stage_log.read_bytes():
        assert time.monotonic() < deadline, "the cut-off stage never gave the Space up"
        time.sleep(0.2)
    time.sleep(3)  # listeners go on hearing the new owner after the heal, not the old one
    for at in logs:
        no_repeats(logs[at])

    # Elections on the heal may have moved a leader: the api puts it back.
    figures["leaders back on nats-h1 after the heal"] = leaders_placed(c)

    # (a) the owner's whole host lost at once: its stage, its NATS node (quorum stays).
    # (Usually the stage that took over; the rejoining node's churn can move it back.)
    current = owner(c, space["space"])
    h[current.split("-")[0]].kill()
    t1 = time.time()
    for at in logs:
        figures[f"host loss: tone back on {at}"] = tone_back(logs[at], t1, 60)
    steps["host loss"] = (t1, current)
    assert owner(c, space["space"]) != current
    for at in logs:
        no_repeats(logs[at])

    for name, value in figures.items():
        print(f"{name}: {value:.2f} s")
    taken: dict[str, float] = {}
    for event, (since, old) in steps.items():  # where the seconds went (docs/operations.md)
        print(f"timeline {event}: at {since:.2f}, {old} owned the Space")
        found = timeline(c, since, old, logs)
        for step, value in sorted(found.items(), key=lambda x: x[1]):
            print(f"timeline {event}: {step}: {value:.2f}")
        taken[event] = found.get("new owner's clock starts", float("inf"))
    # NATS no longer holds a takeover up: with the leaders of the leases bucket, MEDIA and
    # the Spaces bucket kept on nats-h1, a new owner starts within the lease's TTL and one
    # upkeep round (2.2-3.5 s in nine runs); a raft election on the lost host took 4-9 s
    # more (4.9-9.7 s before). How fast the *tone* comes back stays a printed figure
    # (bench/README.md): the speaker's own reconnect and the api's reads decide it now.
    for event, seconds in taken.items():
        assert seconds < TAKEOVER_BOUND_S, f"{event}: the new owner started after {seconds} s"
