"""Raft leader placement: which streams' leaders move where (townhall.cluster.leaders), and
the api's shell that asks for it through the bus (townhall.api.leaders), on a FakeBus."""

from __future__ import annotations

import pytest

from tests.fakebus import FakeBus
from townhall.api.leaders import LOCK_KEY, LeaderSteering
from townhall.bus import subjects
from townhall.cluster.leaders import (
    LeaderPlacement,
    Move,
    Replica,
    StreamCluster,
    parse_nodes,
)


def group(stream: str, leader: str | None, *followers: Replica) -> StreamCluster:
    return StreamCluster(stream, leader, followers)


def ok(name: str) -> Replica:
    return Replica(name, current=True, active_s=0.2)


def test_a_leader_on_a_stage_host_moves_to_the_first_preferred_current_replica() -> None:
    p = LeaderPlacement(preferred=("n1", "n4"))
    r = p.decide([group("MEDIA", "n2", ok("n4"), ok("n1"))], now=0.0)
    assert r.moves == (Move("MEDIA", "n2", "n1"),)  # the operator's order, not the replicas'
    assert r.misplaced == {"MEDIA"}


def test_leaders_in_place_or_electing_are_left_alone() -> None:
    p = LeaderPlacement(preferred=("n1", "n4"))
    r = p.decide([group("A", "n4", ok("n1"), ok("n2")),  # any preferred node will do
                  group("B", None, ok("n1"), ok("n2"))], now=0.0)  # no one to ask
    assert r.moves == () and r.misplaced == frozenset()


def test_nothing_moves_when_no_node_is_preferred() -> None:
    r = LeaderPlacement(preferred=()).decide([group("A", "n2", ok("n1"))], now=0.0)
    assert r.moves == () and r.misplaced == frozenset()


@pytest.mark.parametrize("replica", [
    Replica("n1", current=False, active_s=0.1),             # catching up (a healed node)
    Replica("n1", current=True, offline=True),              # gone
    Replica("n1", current=True, active_s=5.0),              # not heard from lately
])
def test_a_preferred_replica_unfit_to_lead_is_not_asked(replica: Replica) -> None:
    r = LeaderPlacement(preferred=("n1",)).decide([group("A", "n2", replica, ok("n3"))], 0.0)
    assert r.moves == ()
    assert r.misplaced == {"A"} and r.stuck == {"A"}


def test_a_stream_asked_to_move_is_not_asked_again_until_its_election_settles() -> None:
    p = LeaderPlacement(preferred=("n1",), settle_s=10.0)
    misplaced = [group("A", "n2", ok("n1"))]
    assert len(p.decide(misplaced, now=100.0).moves) == 1
    assert p.decide(misplaced, now=105.0).moves == ()  # stream info may still say n2
    assert p.decide(misplaced, now=110.5).moves == (Move("A", "n2", "n1"),)


def test_parse_nodes_keeps_the_order_and_refuses_odd_names() -> None:
    assert parse_nodes(" h1, nats-h4,h1,") == ("h1", "nats-h4")
    assert parse_nodes("") == ()
    with pytest.raises(ValueError):
        parse_nodes("h1,no spaces")


# --- the shell ---------------------------------------------------------------------------

async def test_one_round_moves_misplaced_leaders_through_the_bus() -> None:
    bus = FakeBus()
    bus.clusters = {"KV_stage_leases": group("KV_stage_leases", "n2", ok("n1"), ok("n3")),
                    "MEDIA": group("MEDIA", "n1", ok("n2"), ok("n3"))}
    steering = LeaderSteering(bus, "api-1", ["n1"], streams=["KV_stage_leases", "MEDIA", "X"])
    done = await steering.round_once(now=0.0)
    assert bus.stepdowns == [("KV_stage_leases", "n1")]
    assert done.misplaced == {"KV_stage_leases"}
    assert bus.clusters["KV_stage_leases"].leader == "n1"
    again = await steering.round_once(now=20.0)  # idempotent: in place, nothing asked
    assert again.moves == () and bus.stepdowns == [("KV_stage_leases", "n1")]


async def test_one_api_steers_at_a_time_and_a_clean_stop_hands_over() -> None:
    bus = FakeBus()
    first, second = (LeaderSteering(bus, n, ["n1"]) for n in ("api-1", "api-2"))
    assert await first.hold_lock()
    assert not await second.hold_lock()
    assert await first.hold_lock()  # renewing its own key
    entry = await bus.kv_get(subjects.RECORDERS_BUCKET, LOCK_KEY)
    assert entry is not None and entry.value == b"api-1"
    await first.release()
    assert await second.hold_lock()
    assert not await first.hold_lock()


async def test_a_stuck_stream_is_reported_once_not_every_round(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus()
    bus.clusters = {"MEDIA": group("MEDIA", "n2", Replica("n1", current=False))}
    steering = LeaderSteering(bus, "api-1", ["n1"], streams=["MEDIA"])
    for now in (0.0, 2.0, 4.0):
        assert (await steering.round_once(now)).stuck == {"MEDIA"}
    assert sum("no preferred node" in r.getMessage() for r in caplog.records) == 1
    assert bus.stepdowns == []  # never towards a replica that lags
