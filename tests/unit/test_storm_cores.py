"""Storm cores: accounting, backoff, continuity, percentiles."""

from __future__ import annotations

import random

from townhall.storm.accounting import Ledger
from townhall.storm.backoff import Backoff
from townhall.storm.continuity import Continuity
from townhall.storm.percentiles import TimeSeries, percentile


def test_every_listener_is_accounted_for() -> None:
    led = Ledger(target=5)
    for i in range(4):
        led.start(i)
    led.connected(0)
    led.refused(1, "edge full")
    led.refused(2, "edge full")
    led.connected(2)  # retried and got in
    led.failed(3, "connection reset")
    assert led.counts() == {"connected": 2, "left": 0, "refused": 1, "failed": 1,
                            "pending": 1}
    led.close()
    assert led.counts() == {"connected": 2, "left": 0, "refused": 1, "failed": 2,
                            "pending": 0}
    assert led.balanced()
    assert led.refusals == 2 and led.admitted == 2
    assert led.reasons() == {"refused: edge full": 1, "failed: connection reset": 1,
                             "failed: no audio before the end": 1}


def test_refusal_after_connect_keeps_connected() -> None:
    led = Ledger(target=1)
    led.start(0)
    led.connected(0)
    led.refused(0, "edge full")
    assert led.counts()["connected"] == 1


def test_listeners_who_leave_free_room_for_the_refused() -> None:
    led = Ledger(target=3)
    for i in range(3):
        led.start(i)
    led.connected(0)
    led.refused(1, "edge full")
    led.refused(2, "edge full")
    led.left(0)                  # listened its stay and left...
    led.connected(1)             # ...so a refused listener got in
    led.refused(0, "edge full")  # a refusal after leaving does not undo the visit
    led.close()
    assert led.counts() == {"connected": 1, "left": 1, "refused": 1, "failed": 0,
                            "pending": 0}
    assert led.balanced()
    assert led.admitted_after_refusal == 1  # listener 1 only: 0 was never refused first
    assert led.reasons() == {"refused: edge full": 1}


def test_admitted_after_refusal_counts_a_listener_once() -> None:
    led = Ledger(target=1)
    led.start(0)
    led.refused(0, "edge full")
    led.connected(0)
    led.connected(0)  # a reconnect after a drop is not a second admission after refusal
    assert led.admitted_after_refusal == 1 and led.admitted == 2


def test_backoff_full_jitter_grows_to_cap() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays)
    assert max(delays[:1]) <= 1
    assert max(delays[10:]) > 4  # reached the cap's range
    b.reset()
    assert b.next_delay() <= 1


def test_backoff_obeys_retry_after() -> None:
    b = Backoff(base=0.1, cap=5, rng=random.Random(2))
    delays = [b.next_delay(retry_after=3) for _ in range(20)]
    assert all(3 <= d <= 6 for d in delays)
    assert len(set(delays)) > 1  # jittered, not aligned


def test_continuity_counts_gaps_skips_and_delay() -> None:
    c = Continuity()
    c.chunk(10, sent_us=1_000_000, now_us=1_050_000)
    c.chunk(11, sent_us=1_100_000, now_us=1_120_000)
    c.chunk(14, sent_us=1_400_000, now_us=1_400_000)  # 12, 13 missing
    assert c.gaps == 2
    c.jump(20)  # announced skip of 15..19
    c.chunk(20, sent_us=2_000_000, now_us=2_010_000)
    c.chunk(20, sent_us=2_000_000, now_us=2_010_000)
    assert (c.gaps, c.skipped, c.duplicates, c.chunks) == (2, 5, 1, 4)
    assert c.resume_from() == 21
    assert c.take_delays() == [50.0, 20.0, 0.0, 10.0]
    assert c.take_delays() == []


def test_percentiles_and_series() -> None:
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(list(range(101)), 99) == 99
    ts = TimeSeries()
    ts.add(0, connected=1)
    ts.add(1.0004, connected=3)
    assert ts.column("connected") == [1, 3] and ts.rows[1]["t"] == 1.0
