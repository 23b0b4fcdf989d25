"""Which stage takes an unheld Space, with no I/O: waits, budgets, lapses, and a simulated
burst of Spaces and a hand-over on a simulated clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from townhall.stage.placement import (
    HOT_CPU,
    HOT_S,
    JITTER_S,
    MAX_WAIT_S,
    PEER_STALE_S,
    STEP_S,
    Capacity,
    CpuMeter,
    Placement,
    full,
)


def placement(max_spaces: int = 10, **rivals: int) -> Placement:
    """Our placement at t=0 with rivals (node -> Spaces held), each heard with budget 10."""
    p = Placement("me", max_spaces, lease_ttl_s=3.0)
    n = 0
    for node, held in rivals.items():
        p.heard(Capacity(node, 10), 0.0)
        for _ in range(held):
            n += 1
            p.lease(f"s{n}", node, 0.0)
    return p


def wait(p: Placement, spaces: int, *, now: float = 0.0, speakers: int = 0,
         cpu: float = 0.0, jitter: float = 0.0) -> float | None:
    return p.wait(now, spaces=spaces, speakers=speakers, cpu=cpu, jitter=jitter)


def test_the_least_loaded_stage_waits_only_its_jitter() -> None:
    p = placement(b=3, c=5)
    assert wait(p, 2) == 0.0
    assert wait(p, 2, jitter=0.5) == pytest.approx(JITTER_S / 2)
    assert wait(Placement("alone", 10), 7) == 0.0


def test_a_stage_waits_a_step_per_space_it_carries_above_the_least_loaded() -> None:
    p = placement(b=3, c=5)
    assert wait(p, 4) == pytest.approx(STEP_S)
    assert wait(p, 6) == pytest.approx(3 * STEP_S)
    assert wait(p, 9, speakers=0) == pytest.approx(6 * STEP_S)
    # a speaker weighs a Space: ours add to our load, a rival's (heartbeat) to theirs
    assert wait(p, 4, speakers=2) == pytest.approx(3 * STEP_S)
    p.heard(Capacity("b", 10, speakers=2), 0.0)
    assert wait(p, 4, speakers=2) == pytest.approx(STEP_S)  # c (5) is least now: 6 - 5


def test_the_wait_is_capped_so_a_space_the_others_leave_is_still_taken() -> None:
    p = placement(max_spaces=100, b=0)
    assert wait(p, 90) == pytest.approx(MAX_WAIT_S)


def test_a_stage_at_its_budget_takes_nothing_even_alone() -> None:
    assert wait(Placement("alone", 3), 3) is None
    assert wait(Placement("alone", 3), 2) == 0.0
    assert wait(placement(max_spaces=3, b=9), 3) is None
    assert wait(Placement("unbounded", 0), 10_000) == 0.0
    assert full(3, 3) and not full(2, 3) and not full(10**6, 0)


def test_rivals_at_their_budget_stopping_or_silent_do_not_hold_us_back() -> None:
    p = placement(b=10)  # b holds 10 of its 10: full, not a rival
    assert wait(p, 6) == 0.0
    p = placement(b=1)
    p.heard(Capacity("b", 10, draining=True), 0.0)
    assert wait(p, 6) == 0.0
    p = placement(b=1)
    assert wait(p, 6, now=PEER_STALE_S) == pytest.approx(5 * STEP_S)
    assert wait(p, 6, now=PEER_STALE_S + 0.1) == 0.0  # not heard from: gone


def test_our_own_heartbeat_is_not_a_rival() -> None:
    p = placement()
    p.heard(Capacity("me", 10), 0.0)
    assert wait(p, 5) == 0.0


def test_loads_compare_as_shares_of_each_budget() -> None:
    p = Placement("me", 10)
    p.heard(Capacity("big", 40), 0.0)
    for n in range(8):
        p.lease(f"s{n}", "big", 0.0)  # 8 of 40 = 2 of our 10
    assert wait(p, 3) == pytest.approx(STEP_S)
    assert wait(p, 2) == 0.0


def test_a_hot_stage_yields_to_a_cooler_one_but_not_when_alone() -> None:
    p = placement(b=4)
    assert wait(p, 2, cpu=HOT_CPU) == pytest.approx(HOT_S)
    assert wait(Placement("alone", 10), 2, cpu=HOT_CPU) == 0.0
    p.heard(Capacity("b", 10, cpu=0.95), 0.0)
    assert wait(p, 2, cpu=0.9) == 0.0  # everyone hot: load decides


def test_leases_are_counted_by_holder_and_a_renewal_is_no_change() -> None:
    p = Placement("me", 10)
    assert p.lease("x", "b", 0.0) is True
    assert p.lease("x", "b", 1.0) is False
    assert p.holding("b") == 1 and p.holder("x") == "b"
    assert p.lease("x", "c", 1.5) is True  # taken over
    assert p.holding("b") == 0 and p.holding("c") == 1
    assert p.lease("x", None, 2.0) is True
    assert p.holding("c") == 0 and p.holder("x") is None
    assert p.lease("never-seen", None, 2.0) is False


def test_a_lease_not_renewed_for_a_ttl_has_lapsed() -> None:
    p = Placement("me", 10, lease_ttl_s=3.0)
    p.lease("renewed", "b", 0.0)
    p.lease("dead", "c", 0.0)
    p.lease("renewed", "b", 2.5)
    assert p.unheld(["renewed", "dead", "new"], 3.0) == ["new"]
    assert p.unheld(["renewed", "dead", "new"], 3.1) == ["dead", "new"]
    assert p.holding("c") == 0 and p.holder("dead") is None
    assert p.holding("b") == 1


def test_capacity_from_heartbeats() -> None:
    cap = Capacity.from_report({"node": "n", "max_spaces": 50, "speakers": 3, "cpu": 0.5,
                                "draining": True, "spaces": []})
    assert cap == Capacity("n", 50, 3, 0.5, True)
    assert Capacity.from_report({"node": "old", "speakers": 1}) == Capacity("old", 0, 1)
    assert Capacity.from_report({"spaces": []}) is None
    assert Capacity.from_report({"node": "n", "max_spaces": "lots"}) is None


def test_cpu_meter_smooths_the_share_of_a_core() -> None:
    m = CpuMeter(smoothing=0.5)
    assert m.sample(10.0, 100.0) == 0.0  # the first reading only anchors
    assert m.sample(10.8, 101.0) == pytest.approx(0.4)
    assert m.sample(11.6, 102.0) == pytest.approx(0.6)
    assert m.sample(11.6, 102.0) == pytest.approx(0.6)  # no time passed: unchanged


# --- simulated stages on a simulated clock -------------------------------------------------

RTT_S = 0.002    # one KV create
SEEN_S = 0.003   # a lease write reaches the other stages' watches


@dataclass
class SimStage:
    """One stage's claimer, as Stage._place runs it: a round per claim, its wait looked
    at again whenever what it sees changes."""

    name: str
    view: Placement
    owned: set[str] = field(default_factory=set)
    since: float | None = None   # when the current round began
    jitter: float = 0.0
    busy_until: float = 0.0      # a claim in flight
    draining: bool = False


def simulate(stages: list[SimStage], live: set[str], holders: dict[str, str],
             rng: random.Random, until_s: float = 10.0) -> float:
    """Run claimers until every live Space is held (returns when) or ``until_s``."""
    deliveries: list[tuple[float, str, str | None]] = []
    t = 0.0
    while t < until_s:
        for at, space, holder in [d for d in deliveries if d[0] <= t]:
            deliveries.remove((at, space, holder))
            for s in stages:
                s.view.lease(space, holder, t)
        if all(space in holders for space in live) and not deliveries:
            return t
        for s in stages:  # heartbeats: every stage hears every one
            for other in stages:
                s.view.heard(Capacity(other.name, other.view.max_spaces,
                                      draining=other.draining), t)
        for s in stages:
            if s.draining or t < s.busy_until:
                continue
            pending = [x for x in live if s.view.holder(x) is None and x not in s.owned]
            if not pending:
                s.since = None
                continue
            if s.since is None:
                s.since, s.jitter = t, rng.random()
            w = s.view.wait(t, spaces=len(s.owned), speakers=0, cpu=0.0, jitter=s.jitter)
            if w is None or t < s.since + w:
                continue
            space = rng.choice(sorted(pending))
            s.since, s.busy_until = None, t + RTT_S
            if space not in holders:  # create-only: the first create wins
                holders[space] = s.name
                s.owned.add(space)
                deliveries.append((t + SEEN_S, space, s.name))
        t = round(t + 0.001, 6)
    return t


def stages_of(*names: str, max_spaces: int = 100) -> list[SimStage]:
    return [SimStage(n, Placement(n, max_spaces, lease_ttl_s=3.0)) for n in names]


@pytest.mark.parametrize("seed", range(5))
def test_a_burst_of_60_spaces_spreads_within_one_of_even(seed: int) -> None:
    stages = stages_of("a", "b", "c")
    holders: dict[str, str] = {}
    live = {f"s{n:02}" for n in range(60)}
    took = simulate(stages, live, holders, random.Random(seed))
    counts = sorted(len(s.owned) for s in stages)
    assert sum(counts) == 60 and set(holders) == live
    assert counts[-1] - counts[0] <= 1, counts
    assert took < 2.0, took


def test_a_stage_at_its_budget_leaves_the_rest_to_the_others() -> None:
    stages = stages_of("a", "b", "c", max_spaces=10)
    stages[0].view.max_spaces = 3
    holders: dict[str, str] = {}
    live = {f"s{n:02}" for n in range(20)}
    simulate(stages, live, holders, random.Random(1))
    assert len(stages[0].owned) == 3
    assert sorted(len(s.owned) for s in stages[1:]) == [8, 9]
    assert set(holders) == live


def test_a_stopping_stage_hands_50_spaces_over_in_well_under_a_second() -> None:
    stages = stages_of("gone", "b", "c")
    live = {f"s{n:02}" for n in range(50)}
    for s in stages:
        for space in live:
            s.view.lease(space, "gone", 0.0)
    stages[0].draining = True
    # the leaving stage deletes every lease at once; the others' watches see the deletes
    for s in stages:
        for space in live:
            s.view.lease(space, None, 0.0)
    holders: dict[str, str] = {}
    took = simulate(stages, live, holders, random.Random(7))
    assert set(holders) == live and "gone" not in holders.values()
    assert abs(len(stages[1].owned) - len(stages[2].owned)) <= 1
    assert took < 1.0, took
