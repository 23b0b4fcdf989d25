"""The impairment relay's channel: each condition does to datagrams what it says, with
no clock and no socket (time is passed in; the seed fixes every draw)."""

from __future__ import annotations

import itertools

import pytest

from tests.impair import Channel, Impairment


def run(cond: Impairment, count: int = 10_000, gap: float = 0.02, size: int = 100,
        seed: int = 7) -> tuple[Channel, list[tuple[float, float | None]]]:
    ch = Channel(cond, seed)
    return ch, [(i * gap, ch.offer(size, i * gap)) for i in range(count)]


def test_clean_channel_delivers_everything_in_order_after_the_delay() -> None:
    ch, out = run(Impairment(delay_ms=40))
    assert all(due == pytest.approx(sent + 0.04) for sent, due in out)
    assert ch.counters.delivered == ch.counters.offered == 10_000
    assert ch.counters.reordered == 0


def test_random_loss_is_about_the_rate_asked() -> None:
    ch, out = run(Impairment(loss=0.15))
    lost = sum(1 for _, due in out if due is None)
    assert 1300 < lost < 1700                 # 15 % of 10,000 (sd ~36)
    assert ch.counters.lost_random == lost


def test_gilbert_elliott_loses_in_bursts() -> None:
    # p=0.02, r=0.4: mean burst 1/r = 2.5 packets, ~4.8 % lost overall
    ch, out = run(Impairment(ge_p=0.02, ge_r=0.4))
    lost = [due is None for _, due in out]
    bursts, run_len, runs = 0, 0, []
    for gone in lost:
        if gone:
            run_len += 1
        elif run_len:
            runs.append(run_len)
            run_len = 0
    bursts = len(runs)
    assert 0.03 < sum(lost) / len(lost) < 0.07
    assert 2.0 < sum(runs) / bursts < 3.2     # random loss at this rate would average ~1.05
    assert ch.counters.lost_burst == sum(lost)


def test_jitter_reorders_and_fifo_does_not() -> None:
    ch, out = run(Impairment(delay_ms=40, jitter_ms=20), gap=0.01)
    dues = [due for _, due in out if due is not None]
    assert ch.counters.reordered > 100
    assert any(b < a for a, b in itertools.pairwise(dues))
    assert all(sent + 0.02 - 1e-9 <= due <= sent + 0.06 + 1e-9 for sent, due in out
               if due is not None)
    fifo, out = run(Impairment(delay_ms=40, jitter_ms=20, reorder=False), gap=0.01)
    dues = [due for _, due in out if due is not None]
    assert fifo.counters.reordered == 0 and dues == sorted(dues)


def test_bottleneck_spaces_packets_and_drops_past_its_queue() -> None:
    # 24 kbit/s, 200-byte datagrams every 20 ms = 80 kbit/s offered: the queue fills
    ch, out = run(Impairment(rate_kbps=24, queue_ms=200), count=500, size=200)
    dues = [due for _, due in out if due is not None]
    spacing = [b - a for a, b in itertools.pairwise(dues)]
    assert min(spacing) >= 200 * 8 / 24_000 - 1e-9
    assert ch.counters.lost_queue > 300       # ~70 % cannot fit
    assert max(due - sent for sent, due in out if due is not None) <= 0.2 + 0.07


def test_delay_spikes_hold_what_is_sent_during_them() -> None:
    _ch, out = run(Impairment(delay_ms=10, spike_every_s=1.0, spike_ms=300), count=200,
                  gap=0.02)
    for sent, due in out:
        assert due is not None
        phase = sent % 1.0
        if phase >= 0.7:                       # inside the spike: held to its end
            assert due == pytest.approx(sent - phase + 1.0)
        else:
            assert due == pytest.approx(sent + 0.01)


def test_nonsense_conditions_are_refused() -> None:
    for bad in (dict(loss=1.5), dict(delay_ms=-1), dict(delay_ms=10, jitter_ms=20)):
        with pytest.raises(ValueError):
            Impairment(**bad)
