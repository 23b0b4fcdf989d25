"""The stage's receiver-report counters: loss as the link lost it, resends included.
Time is passed in; nothing sleeps."""

from __future__ import annotations

import random

from townhall.media.nack import NackList
from townhall.media.reception import ReceptionStats

FRAME = 960  # RTP timestamp units per 20 ms packet at 48 kHz


def test_a_clean_stream_loses_nothing() -> None:
    stats = ReceptionStats()
    for k in range(100):
        stats.add(k, k * FRAME, k * 0.02)
    assert (stats.expected, stats.packets_lost, stats.take_fraction_lost()) == (100, 0, 0)
    assert stats.jitter == 0 and stats.max_seq == 99


def test_random_loss_repaired_by_resends_is_still_reported() -> None:
    # 15 % of the packets lost on the way, each asked for and resent a round trip later,
    # and 15 % of the resends lost too: counting resends as received said ~2 %.
    rng, rtt = random.Random(7), 0.03
    nack, stats = NackList(share=1.0, burst=100, tries=1), ReceptionStats()
    arrivals: list[tuple[float, int]] = []
    for k in range(2000):
        if rng.random() >= 0.15:
            arrivals.append((k * 0.02, k))
        elif rng.random() >= 0.15:
            arrivals.append(((k + 1) * 0.02 + rtt, k))   # asked when k + 1 came
    for at, seq in sorted(arrivals):
        stats.add(seq, seq * FRAME, at, nack.asked_at(seq), rtt)
        nack.arrived(seq)
        nack.due(at, rtt)
    fraction = stats.take_fraction_lost() / 256
    assert 0.13 < fraction < 0.17, fraction
    assert stats.resends > 0.1 * 2000
    assert stats.packets_received == stats.received == 2000 - stats.packets_lost


def test_an_original_that_was_only_late_is_not_a_resend() -> None:
    stats = ReceptionStats()
    stats.add(1, FRAME, 0.020)
    stats.add(3, 3 * FRAME, 0.060)         # 2 is missing: asked for at 0.060
    stats.add(2, 2 * FRAME, 0.065, asked_at=0.060, rtt_s=0.05)  # too soon for a resend
    stats.add(4, 4 * FRAME, 0.080)
    assert (stats.received, stats.resends, stats.packets_lost) == (4, 0, 0)
    stats.add(6, 6 * FRAME, 0.120)
    stats.add(5, 5 * FRAME, 0.180, asked_at=0.120, rtt_s=0.05)  # a round trip later
    assert (stats.received, stats.resends, stats.packets_lost) == (5, 1, 1)
    stats.add(8, 8 * FRAME, 0.160)
    stats.add(7, 7 * FRAME, 0.161, asked_at=0.160)   # round trip not known yet: a resend
    assert stats.resends == 2
    stats.add(10, 10 * FRAME, 0.200)
    stats.add(9, 9 * FRAME, 0.200, asked_at=0.200, rtt_s=0.001)  # a loopback: within the
    assert stats.resends == 3                                   # clock's millisecond


def test_the_fraction_covers_the_time_since_the_previous_report() -> None:
    stats = ReceptionStats()
    for k in range(0, 100, 2):             # every other packet lost
        stats.add(k, k * FRAME, k * 0.02)
    assert stats.fraction_lost == 49 * 256 // 99   # 49 of 99 expected, in 1/256
    for k in range(100, 200):
        stats.add(k, k * FRAME, k * 0.02)
    assert stats.fraction_lost == 256 // 101   # 99 was the only loss since (a gap is
    assert stats.packets_lost == 50            # counted once a later packet shows it)
    for k in range(200, 300):
        stats.add(k, k * FRAME, k * 0.02)
    assert stats.fraction_lost == 0 and stats.packets_lost == 50


def test_duplicates_and_wraparound() -> None:
    stats = ReceptionStats()
    for seq in (65534, 65535, 65535, 0, 1, 1):
        stats.add(seq, 0, 0.0)
    assert (stats.received, stats.duplicates, stats.packets_lost) == (4, 2, 0)
    assert stats.max_seq == 65536 + 1      # cycles in the top 16 bits, as RTCP wants


def test_jitter_follows_rfc_3550() -> None:
    stats = ReceptionStats()
    for k in range(400):                   # every packet 10 ms early or late, alternately
        stats.add(k, k * FRAME, k * 0.02 + (0.01 if k % 2 else 0.0))
    assert abs(stats.jitter - 480) < 20     # |D| = 10 ms = 480 units every time


def test_a_resend_is_asked_at_its_first_ask_and_retried_after_a_round_trip() -> None:
    nack = NackList(retry_s=0.03, tries=3)
    nack.arrived(1)
    nack.arrived(3)
    assert nack.due(0.0, rtt_s=0.06) == [2] and nack.asked_at(2) == 0.0
    assert nack.due(0.05, rtt_s=0.06) == []          # the resend may still be on its way
    assert nack.due(0.076, rtt_s=0.06) == [2]        # 1.25 round trips: lost, ask again
    assert nack.asked_at(2) == 0.0                   # the first ask is what counts
    assert nack.asked_at(1) is None
