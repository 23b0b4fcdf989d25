"""Sans-I/O cores of the edge: ring, resume plan, admission, per-connection backlog."""

from __future__ import annotations

import pytest

from townhall.edge.admission import Admission, TokenBucket
from townhall.edge.backlog import Backlog, Offer, Skip
from townhall.edge.resume import Source, plan_resume, stitch
from townhall.edge.ring import Ring


def test_ring_keeps_newest_and_refuses_old_or_duplicate() -> None:
    ring: Ring[str] = Ring(capacity=3)
    assert ring.first_seq is None and ring.since(0) == []
    for s in (5, 6, 7, 8):
        assert ring.add(s, f"c{s}")
    assert not ring.add(8, "dup") and not ring.add(3, "old")
    assert (ring.first_seq, ring.last_seq, len(ring)) == (6, 8, 3)
    assert ring.since(7) == [(7, "c7"), (8, "c8")]
    assert ring.since(9) == []
    assert ring.holds(6) and ring.holds(9) and not ring.holds(5) and not ring.holds(10)


def test_ring_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        Ring(capacity=0)


def test_resume_live_ring_replay_jump() -> None:
    assert plan_resume(None, 100, 199).source is Source.LIVE
    p = plan_resume(150, 100, 199)
    assert (p.source, p.start) == (Source.RING, 150)
    assert plan_resume(200, 100, 199).source is Source.RING  # the very next chunk
    assert plan_resume(250, 100, 199).source is Source.JUMP  # from the future
    p = plan_resume(50, 100, 199, chunk_s=0.1, margin_s=2.0)
    assert p.source is Source.REPLAY and p.start == 50
    assert p.since_s == pytest.approx(15.0 + 2.0)
    assert plan_resume(1, 1000, 1099, replay_window_s=55).source is Source.JUMP
    assert plan_resume(7, None, None).source is Source.REPLAY  # edge just subscribed


def test_token_bucket_refills_with_time() -> None:
    b = TokenBucket(rate=2, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert b.wait_s(0.0) == pytest.approx(0.5)
    assert b.take(0.5) and not b.take(0.5)
    assert b.take(10.0) and b.take(10.0) and not b.take(10.0)  # capped at burst


def test_admission_cap_and_rate() -> None:
    adm = Admission(capacity=3, join_rate=2, now=0.0, full_retry_s=7)
    assert adm.decide(0, 0.0).admitted and adm.decide(1, 0.0).admitted
    d = adm.decide(2, 0.0)
    assert not d.admitted and d.reason == "join-rate" and d.retry_after >= 1
    assert adm.decide(2, 1.0).admitted
    d = adm.decide(3, 5.0)
    assert (d.admitted, d.retry_after, d.reason) == (False, 7, "full")


def test_backlog_fast_reader_keeps_everything() -> None:
    b: Backlog[int] = Backlog(limit=3)
    got = []
    for s in range(1, 50):
        assert b.offer(s, s) is Offer.QUEUED
        item = b.take()
        assert item is not None
        got.append(item[0])
    assert got == list(range(1, 50)) and b.skips == 0 and b.take_skip() is None


def test_backlog_skips_to_live_then_closes_with_resume_hint() -> None:
    b: Backlog[int] = Backlog(limit=3, max_skips=1)
    for s in (1, 2, 3):
        assert b.offer(s, s) is Offer.QUEUED
    assert b.offer(4, 4) is Offer.SKIPPED
    assert b.take_skip() == Skip(1, 4) and b.take_skip() is None
    assert len(b) == 1 and b.skips == 1
    assert b.offer(5, 5) is Offer.QUEUED and b.offer(6, 6) is Offer.QUEUED
    assert b.offer(7, 7) is Offer.CLOSE
    assert b.resume_from == 4
    assert b.offer(8, 8) is Offer.CLOSE


def test_backlog_forgives_skips_after_catching_up() -> None:
    b: Backlog[int] = Backlog(limit=2, max_skips=1)
    b.offer(1, 1)
    b.offer(2, 2)
    assert b.offer(3, 3) is Offer.SKIPPED
    for s in range(4, 200):
        b.take()
        assert b.offer(s, s) is Offer.QUEUED
    b.offer(200, 200)
    assert b.offer(201, 201) is Offer.SKIPPED  # forgiven: a skip, not a close


def test_backlog_preload_does_not_count_as_behind() -> None:
    b: Backlog[int] = Backlog(limit=2)
    b.preload([(s, s) for s in range(1, 11)])
    assert b.offer(11, 11) is Offer.QUEUED and b.offer(12, 12) is Offer.QUEUED
    got = []
    while (item := b.take()) is not None:
        got.append(item[0])
    assert got == list(range(1, 13)) and b.skips == 0


def test_backlog_allowance_is_not_cumulative() -> None:
    b: Backlog[int] = Backlog(limit=2, max_skips=5)
    for s in range(1, 30):
        b.allow(3)  # a stalled reader: the edge keeps granting room for held chunks
        b.offer(s, s)
    assert len(b) <= 2 + 3 and b.skips > 0


def test_stitch_joins_replay_and_ring_without_duplicates_in_order() -> None:
    replayed = [(s, f"r{s}") for s in (12, 10, 11, 13, 14)]  # out of order
    held = [(s, f"h{s}") for s in (13, 14, 15, 16)]           # overlaps the replay
    out = stitch(10, replayed, held)
    assert [s for s, _ in out] == [10, 11, 12, 13, 14, 15, 16]
    assert out[3] == (13, "r13")  # the first copy wins, duplicates dropped
    assert stitch(12, replayed, held)[0][0] == 12  # older replayed chunks left out


def test_stitch_never_bridges_a_hole_silently() -> None:
    # The replay came back short (10..12) and the ring starts at 20: 13..19 are lost.
    out = stitch(10, [(s, s) for s in (10, 11, 12)], [(s, s) for s in (20, 21)])
    assert [s for s, _ in out] == [20, 21]  # caller sends jump from=10 to=20
    # A hole inside the replay itself.
    out = stitch(10, [(s, s) for s in (10, 11, 14, 15)], [(16, 16)])
    assert [s for s, _ in out] == [14, 15, 16]
    assert stitch(10, [], []) == []
