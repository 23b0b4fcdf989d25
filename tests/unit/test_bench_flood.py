"""The flood bench's pure parts: its bombs are the ones issue 13 describes, and its windows
count gaps, missing chunks and late ticks as the README says."""

from __future__ import annotations

import pytest

from bench.flood.attacks import bomb
from bench.flood.measure import Ear, Heartbeats
from tests.security.offers import CHROMIUM_AV
from townhall.problems import Problem
from townhall.sdp import check_sdp


def test_the_bench_bombs_are_issue_13s_and_are_refused_precisely() -> None:
    big, compact = bomb(CHROMIUM_AV, 213, 64_000), bomb(CHROMIUM_AV, 213, 0)
    assert 60_000 < len(big) <= 64_000 and big.count("\nm=audio") == 213
    assert compact.count("\nm=audio") == 213 and len(compact) < 32 * 1024
    forty = bomb(CHROMIUM_AV, 40, 0)
    for offer, slug in ((big, "sdp-too-large"), (compact, "sdp-too-large"),  # over 1,024 lines
                        (forty, "too-many-media")):
        with pytest.raises(Problem) as info:
            check_sdp(offer.encode())
        assert info.value.type == f"/problems/{slug}"


def test_a_listener_window_counts_the_worst_gap_and_missing_chunks() -> None:
    ear = Ear(heard=[(0.0, 1), (0.1, 2), (0.2, 3), (0.9, 6), (1.0, 7)])
    gap_ms, missing = ear.window(0.0, 1.0)
    assert round(gap_ms) == 700 and missing == 2
    assert ear.window(5.0, 6.0) == (1000.0, 0)  # nothing heard: the whole window is a gap


def test_heartbeats_give_the_window_s_ticks_late_ticks_and_worst_lateness() -> None:
    beats = Heartbeats(seen=[(0.0, {"ticks": 100, "late_frames": 1, "max_late_ms": 5.0}),
                             (1.0, {"ticks": 150, "late_frames": 4, "max_late_ms": 40.0}),
                             (2.0, {"ticks": 200, "late_frames": 4, "max_late_ms": 3.0})])
    assert beats.window(0.5, 2.5) == (100, 3, 40.0)
    assert beats.window(5.0, 6.0)[:2] == (0, 0)
