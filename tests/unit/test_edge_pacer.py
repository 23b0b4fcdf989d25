"""The delivery-interval pacer: up under lag, back down when calm, bounded both ways."""

from __future__ import annotations

from townhall.edge.pacer import STEPS_S, Pacer


def test_calm_edge_delivers_every_100_ms() -> None:
    p = Pacer()
    assert all(p.observe(0.001, 0.0) == 0.1 for _ in range(100))


def test_lag_steps_up_to_one_second_and_no_further() -> None:
    p = Pacer(hot_ticks=2)
    seen = [p.observe(0.2, 0.0) for _ in range(40)]
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
    p.observe(0.2, 0.0)
    p.observe(0.03, 0.0)      # neither hot nor calm
    assert p.observe(0.2, 0.0) == 0.1  # streak restarted
