"""The listener's edge choice: immediate failover, jittered backoff, Retry-After."""

from __future__ import annotations

import random

import pytest

from townhall.client.failover import EdgeChooser


def chooser(*edges: str, seed: int = 1) -> EdgeChooser:
    return EdgeChooser(list(edges), rng=random.Random(seed))


def test_first_edge_first() -> None:
    assert chooser("a", "b").current == "a"


def test_a_dead_edge_fails_over_at_once() -> None:
    c = chooser("a", "b", "c")
    assert c.failed() == 0.0
    assert c.current == "b"
    assert c.failed() == 0.0
    assert c.current == "c"


def test_backoff_only_after_every_edge_failed_in_a_row() -> None:
    c = chooser("a", "b")
    c.failed()
    delay = c.failed()
    assert c.current == "a"
    assert 0.0 <= delay <= c.base_s
    delays = [c.failed() for _ in range(20)]
    assert max(delays) <= c.cap_s


def test_backoff_ceiling_grows_and_is_capped() -> None:
    worst = []
    for rounds in range(1, 10):
        delays = []
        for seed in range(100):
            c = chooser("a", seed=seed)
            for _ in range(rounds):
                d = c.failed()
            delays.append(d)
        worst.append(max(delays))
    assert worst[0] <= 0.25 and worst[3] > 1.0
    assert all(w <= 10.0 for w in worst) and worst[-1] > 8.0


def test_full_jitter_spreads_a_crowd() -> None:
    delays = []
    for seed in range(200):
        c = chooser("a", seed=seed)
        for _ in range(4):
            d = c.failed()
        delays.append(d)
    assert min(delays) < 0.3 * max(delays)  # not everyone comes back in the same second


def test_success_resets_the_backoff() -> None:
    c = chooser("a", "b")
    for _ in range(6):
        c.failed()
    c.connected()
    assert c.failed() == 0.0


def test_full_edges_are_waited_for_with_jitter_over_retry_after() -> None:
    c = chooser("a", "b")
    assert c.failed(retry_after=4.0) == 0.0  # b may have room
    delay = c.failed(retry_after=2.0)
    assert 4.0 <= delay < 8.0


def test_refresh_keeps_the_current_edge_when_still_listed() -> None:
    c = chooser("a", "b", "c")
    c.failed()
    c.refresh(["c", "b"])
    assert c.current == "b"
    c.refresh(["x"])
    assert c.current == "x"
    c.refresh([])
    assert c.current == "x"


def test_no_edges_is_an_error() -> None:
    with pytest.raises(ValueError):
        EdgeChooser([])
