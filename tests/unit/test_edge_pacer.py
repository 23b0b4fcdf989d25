"""The delivery-interval pacer: up under lag or load, back down when calm, bounded both ways."""

from __future__ import annotations

from townhall.edge.pacer import STEPS_S, Pacer


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


def test_in_between_resets_streaks() -> None:
    p = Pacer(hot_ticks=2, calm_ticks=2)
    p.observe(0.3, 0.0)
    p.observe(0.0, 0.1)       # neither hot nor calm
    assert p.observe(0.3, 0.0) == 0.1  # streak restarted


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
