"""A key-value watch that fell behind its bucket's stream is noticed (bus.stall)."""

from __future__ import annotations

from townhall.bus.stall import STALL_S, WatchLag


def test_a_watch_caught_up_is_not_stalled() -> None:
    lag = WatchLag()
    lag.delivered(7)
    assert not lag.stalled(7, 0.0)
    assert not lag.stalled(7, 100.0)


def test_a_watch_behind_for_the_bound_is_stalled() -> None:
    lag = WatchLag()
    lag.delivered(7)
    assert not lag.stalled(9, 10.0)  # a write in flight: not yet
    assert not lag.stalled(9, 10.0 + STALL_S / 2)
    assert lag.stalled(9, 10.0 + STALL_S)


def test_catching_up_resets_the_clock() -> None:
    lag = WatchLag()
    lag.delivered(7)
    assert not lag.stalled(9, 10.0)
    lag.delivered(9)
    assert not lag.stalled(9, 11.0)
    assert not lag.stalled(12, 12.0)          # behind again, from now
    assert not lag.stalled(12, 12.0 + STALL_S / 2)
    assert lag.stalled(12, 12.0 + STALL_S)


def test_a_restarted_watch_waits_only_for_later_writes() -> None:
    lag = WatchLag()
    assert not lag.stalled(3, 0.0)
    assert lag.stalled(3, STALL_S)
    # Revision 3 expired (a lease's TTL) before the new watch began: it never comes.
    lag.restarted(3)
    assert not lag.stalled(3, STALL_S + 0.1)
    assert not lag.stalled(3, 10 * STALL_S)
    assert not lag.stalled(4, 10 * STALL_S)
    assert lag.stalled(4, 11 * STALL_S)


def test_a_restart_with_the_stream_unknown_gets_the_bound_again() -> None:
    lag = WatchLag()
    assert not lag.stalled(3, 0.0)
    lag.restarted(None)
    assert not lag.stalled(3, 10.0)
    assert lag.stalled(3, 10.0 + STALL_S)


def test_a_busy_bucket_always_a_write_ahead_is_not_stalled() -> None:
    lag = WatchLag()
    for t in range(20):  # renewals every second: the watch is one write behind each look
        lag.delivered(10 * t + 9)
        assert not lag.stalled(10 * t + 10, float(t))


def test_only_a_quiet_watch_is_checked() -> None:
    lag = WatchLag()
    assert lag.quiet()
    lag.delivered(4)
    assert not lag.quiet()  # delivered since the last look: alive, the stream not asked
    assert lag.quiet()
