"""The speaker's bitrate adapter, driven by simulated receiver reports (time passed in)."""

from __future__ import annotations

from collections.abc import Callable

from townhall.client.bitrate import BitrateAdapter, wire_bytes

Link = Callable[[int, float], tuple[float, float]]  # (bitrate, now) -> (loss, rtt)


def bottleneck(kbps: float, rtt_s: float = 0.02, queue_s: float = 0.2) -> Link:
    """A drop-tail bottleneck: what does not fit is lost, and its queue is full then."""
    def link(bitrate: int, now: float) -> tuple[float, float]:
        offered = wire_bytes(bitrate) * 8 * 50
        loss = max(0.0, 1 - kbps * 1000 / offered)
        return loss, rtt_s + (queue_s if loss > 0 else 0.0)
    return link


def random_loss(p: float, rtt_s: float = 0.02) -> Link:
    return lambda bitrate, now: (p, rtt_s)


def drive(adapter: BitrateAdapter, link: Link, seconds: float,
          start: float = 0.0, every: float = 1.0) -> list[tuple[float, int]]:
    """Reports every ``every`` s for ``seconds``; the (time, bitrate) of each change."""
    changes = []
    t = start
    while t < start + seconds:
        loss, rtt = link(adapter.bitrate, t)
        new = adapter.report(loss, rtt, t)
        if new is not None:
            changes.append((t, new))
        t += every
    return changes


def test_clean_link_stays_at_the_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    assert drive(adapter, random_loss(0.0), 120) == []
    assert adapter.bitrate == 64_000


def test_bottleneck_steps_down_until_the_loss_is_gone() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    changes = drive(adapter, bottleneck(40), 30)
    rates = [rate for _, rate in changes]
    assert rates[:3] == [40_000, 24_000, 16_000]
    assert bottleneck(40)(16_000, 0)[0] == 0
    # Later it tries 24 kbit/s again after a clean stretch, and comes back.
    assert adapter.bitrate == 16_000
    # The first step within ~2-3 s of reports (loss high twice in a row).
    assert changes[0][0] <= 3.0


def test_bottleneck_below_every_rate_ends_at_the_lowest() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    rates = [rate for _, rate in drive(adapter, bottleneck(24), 40)]
    assert rates == [40_000, 24_000, 16_000, 12_000]


def test_random_loss_trial_is_undone_and_retried_later() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    changes = drive(adapter, random_loss(0.15), 60)
    assert changes[0][1] == 40_000
    assert changes[1][1] == 64_000  # the lower rate did not help: back
    assert adapter.bitrate == 64_000
    # After the undone trial, the next waits the holdoff (20 s), then twice as long.
    downs = [t for t, rate in changes if rate == 40_000]
    assert len(downs) == 2
    assert downs[1] - downs[0] >= 20
    assert sum(1 for _, rate in changes if rate < 64_000) <= 2


def test_drained_queue_confirms_a_trial_even_if_the_loss_barely_moved() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    losses = iter([0.3, 0.3, 0.3, 0.28, 0.28])
    rtts = iter([0.25, 0.25, 0.25, 0.05, 0.05])
    for t in range(5):
        adapter.report(next(losses), next(rtts), float(t))
    assert adapter.bitrate == 40_000


def test_steps_back_up_after_a_clean_stretch_and_backs_off_when_it_fails() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    link = bottleneck(66)  # fits 40 kbit/s, not 64
    changes = drive(adapter, link, 100)
    assert changes[0][1] == 40_000
    ups = [t for t, rate in changes if rate == 64_000]
    downs = [t for t, rate in changes if rate == 40_000]
    assert len(ups) >= 2
    # A failed step up is undone within a few reports, and the next waits longer.
    assert all(0 < d - u <= 4 for u, d in zip(ups, downs[1:], strict=False))
    gaps = [ups[i + 1] - downs[i + 1] for i in range(len(ups) - 1)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]
    assert adapter.bitrate in (40_000, 64_000)


def test_link_that_clears_returns_to_the_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    drive(adapter, bottleneck(24), 30)
    assert adapter.bitrate == 12_000
    drive(adapter, random_loss(0.0), 60, start=30)
    assert adapter.bitrate == 64_000


def test_reports_covering_the_old_rate_are_not_counted() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    adapter.report(0.5, 0.2, 0.0)
    adapter.report(0.5, 0.2, 1.0)
    assert adapter.report(0.5, 0.2, 2.0) == 40_000
    # Arrived 0.1 s after the switch: it covers 64 kbit/s time; so does the next (the
    # queue had not drained when its interval began). Then two reports judge the trial.
    assert adapter.report(0.0, 0.02, 2.1) is None
    assert adapter.report(0.0, 0.02, 3.0) is None
    assert adapter.report(0.5, 0.2, 4.0) is None
    assert adapter.report(0.5, 0.2, 5.0) == 64_000  # no better at 40: undone


def test_bitrate_below_the_steps_and_a_lower_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=32_000)
    assert adapter.bitrate == 32_000
    drive(adapter, bottleneck(10), 40)
    assert adapter.bitrate == 12_000
    assert BitrateAdapter(max_bitrate=8_000).bitrate == 8_000
