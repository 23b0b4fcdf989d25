"""The delivery-interval pacer: up under lag or load, back down when calm, bounded both ways."""

from __future__ import annotations

import random

import pytest

from townhall.edge.gate import interval_floor_from_env
from townhall.edge.pacer import STEPS_S, Pacer, steps_from

TICK_S = STEPS_S[0]


def blocked_ticks(share: float, burst_s: float, seconds: float,
                  jitter_s: float = 0.0, seed: int = 1) -> list[tuple[float, float]]:
    """(lag, busy) of each 100 ms tick of a loop blocked `share` of the time in CPU-bound
    bursts of `burst_s` (the gap between bursts varied by ±jitter_s)."""
    rng = random.Random(seed)
    bursts: list[tuple[float, float]] = []
    start = 0.05
    while start < seconds:
        bursts.append((start, start + burst_s))
        start += burst_s / share + rng.uniform(-jitter_s, jitter_s)
    ticks: list[tuple[float, float]] = []
    t = 0.0
    while t < seconds:
        due = wake = t + TICK_S
        for begin, end in bursts:
            if begin <= due < end or t <= begin < due:  # the timer fires once it ends
                wake = end
                break
        cpu = sum(max(0.0, min(end, wake) - max(begin, t)) for begin, end in bursts)
        ticks.append((wake - due, cpu / (wake - t)))
        t = wake
    return ticks


def test_calm_edge_delivers_every_100_ms() -> None:
    p = Pacer()
    assert all(p.observe(0.001, 0.0) == 0.1 for _ in range(100))


def test_lag_steps_up_to_one_second_and_no_further() -> None:
    p = Pacer(hot_ticks=2)
    seen = [p.observe(0.6, 0.0) for _ in range(40)]
    assert seen[0] == 0.1 and seen[1] == 0.2
    assert seen == sorted(seen) and seen[-1] == STEPS_S[-1] == 1.0


def test_queued_writes_alone_also_step_up() -> None:
    p = Pacer(hot_ticks=1)
    assert p.observe(0.0, 0.5) == 0.2


def test_steps_down_one_at_a_time_after_calm() -> None:
    p = Pacer(hot_ticks=1, calm_ticks=3)
    for _ in range(3):
        p.observe(0.5, 0.0)
    assert p.step == 3
    top = p.step
    out = [p.observe(0.0, 0.0) for _ in range(3 * top)]
    assert out[2] == STEPS_S[top - 1] and out[-1] == 0.1


def test_an_in_between_tick_restarts_the_calm_streak() -> None:
    p = Pacer(hot_ticks=1, calm_ticks=3)
    p.observe(0.3, 0.0)
    assert p.interval_s == 0.2
    p.observe(0.0, 0.0)
    p.observe(0.0, 0.0)
    p.observe(0.0, 0.1)       # neither hot nor calm (a few listeners behind)
    assert [p.observe(0.0, 0.0) for _ in range(3)] == [0.2, 0.2, 0.1]


def test_a_fan_out_burst_alone_is_not_overload() -> None:
    p = Pacer()
    # 10,000 direct writes in one 80 ms burst per 100 ms chunk, half a core busy: stay.
    assert all(p.observe(0.08, 0.0, 0.5) == 0.1 for _ in range(100))


def test_out_of_cpu_steps_up_and_steps_down_only_when_the_finer_step_fits() -> None:
    p = Pacer(hot_ticks=2, calm_ticks=3)
    for _ in range(100):
        if p.observe(0.0, 0.0, 1.0) > 0.1:
            break
    assert p.interval_s == 0.2
    # At 200 ms the edge uses 55 % of a core: 100 ms would need ~110 %, so it stays.
    assert all(p.observe(0.0, 0.0, 0.55) == 0.2 for _ in range(100))
    # Load falls to 30 %: 100 ms would need ~60 %, under busy_low: back down.
    out = [p.observe(0.0, 0.0, 0.3) for _ in range(100)]
    assert out[-1] == 0.1


def test_flush_spikes_at_a_coarse_interval_do_not_block_stepping_down() -> None:
    p = Pacer(hot_ticks=1)
    while p.interval_s < 0.7:
        p.observe(1.0, 0.0, 1.0)
    # Every 7th tick carries a 700 ms flush (a full tick of CPU), the others 30 %: 40 % of
    # a core on average, so 500 ms fits (~56 %) though each spike alone says it would not.
    out = [p.observe(0.0, 0.0, 1.0 if i % 7 == 0 else 0.3) for i in range(300)]
    assert out[-1] < 0.7


def test_a_loop_blocked_70_percent_in_350_ms_bursts_steps_up_and_holds() -> None:
    # Late (~300 ms), on time in the 150 ms gap, late again: never two late in a row.
    ticks = blocked_ticks(0.7, 0.35, 60)
    assert [lag > 0.25 for lag, _ in ticks[:6]] == [True, False] * 3
    p = Pacer()
    out = [p.observe(lag, 0.0, busy) for lag, busy in ticks]
    assert out[-1] > 0.3
    assert out == sorted(out), "stepped down while the loop still lagged (flapping)"
    assert [p.observe(0.0, 0.0, 0.1) for _ in range(200)][-1] == 0.1, "no step down"


def test_bursts_with_uneven_gaps_step_up_too() -> None:
    for seed in range(5):
        p = Pacer()
        out = [p.observe(lag, 0.0, busy)
               for lag, busy in blocked_ticks(0.6, 0.35, 30, jitter_s=0.1, seed=seed)]
        assert out[-1] > 0.1, seed


def test_one_isolated_late_tick_does_not_step_up() -> None:
    p = Pacer()
    assert p.observe(0.6, 0.0) == 0.1
    assert all(p.observe(0.0, 0.0) == 0.1 for _ in range(50))


def test_a_hiccup_every_second_never_steps_up() -> None:
    p = Pacer()
    out = [p.observe(0.4 if i % 10 == 0 else 0.0, 0.0, 0.2) for i in range(300)]
    assert set(out) == {0.1}


def test_a_loop_blocked_a_fifth_of_the_time_stays_at_100_ms() -> None:
    p = Pacer()
    assert all(p.observe(lag, 0.0, busy) == 0.1
               for lag, busy in blocked_ticks(0.2, 0.3, 60, jitter_s=0.05))


def test_an_operator_floor_is_the_finest_step_and_load_still_coarsens_from_it() -> None:
    p = Pacer(hot_ticks=1, calm_ticks=3, floor_s=0.5)
    assert p.steps == (0.5, 0.7, 1.0)
    assert all(p.observe(0.0, 0.0) == 0.5 for _ in range(20))    # calm: never below
    assert p.observe(0.0, 0.9) == 0.7                               # many behind: coarser
    assert [p.observe(0.0, 0.0) for _ in range(6)][-1] == 0.5      # back to the floor


def test_the_floor_is_clamped_to_the_default_range() -> None:
    assert steps_from(0.05) == STEPS_S
    assert steps_from(5.0) == (1.0,)
    assert steps_from(0.4) == (0.4, 0.5, 0.7, 1.0)


@pytest.mark.parametrize(("raw", "floor"), [("", 0.1), ("100", 0.1), ("1000", 1.0),
                                             ("250", 0.2)])
def test_the_floor_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str,
                                              floor: float) -> None:
    monkeypatch.setenv("TOWNHALL_EDGE_INTERVAL_MS", raw)
    assert interval_floor_from_env() == floor


@pytest.mark.parametrize("raw", ["50", "5000", "fast"])
def test_a_bad_floor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("TOWNHALL_EDGE_INTERVAL_MS", raw)
    with pytest.raises(ValueError, match="TOWNHALL_EDGE_INTERVAL_MS"):
        interval_floor_from_env()


def test_ten_thousand_listeners_settle_at_200_ms_not_300() -> None:
    # bench/fanout: 10,000 listeners took 47 % of a core at 300 ms; 100 ms would take ~80 %.
    p = Pacer(hot_ticks=1, calm_ticks=3)
    while p.interval_s < 0.3:
        p.observe(0.0, 0.0, 1.0)         # the join ramp: out of CPU
    assert p.interval_s == 0.3
    p.busy = 0.47
    assert 0.5 < p.predict(0.2) < 0.6 and 0.75 < p.predict(0.1) < 0.85
    ticks = 0
    while p.observe(0.0, 0.0, 0.47) == 0.3 and ticks < 10:
        ticks += 1
    assert p.interval_s == 0.2
    p.busy = 0.55
    # at 200 ms it uses what the model said (~55 %): 100 ms would not fit, so it stays
    assert all(p.observe(0.0, 0.0, 0.55) == 0.2 for _ in range(200))
