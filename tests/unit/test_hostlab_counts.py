"""The counts bench/failover and test_hosts take from a run's files (tests/hostlab.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from tests.hostlab import Cluster, longest_pause, repeats, takeovers


def _write(path: Path, rows: list[list[Any]]) -> None:
    # and a last line still being written, which the readers skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '[1, "cut o')


def test_repeats_counts_numbers_heard_twice_and_going_back(tmp_path: Path) -> None:
    heard = tmp_path / "heard.jsonl"
    _write(heard, [[t, seq, 0, True] for t, seq in enumerate([1, 2, 3, 2, 4, 5])])
    assert repeats(heard) == (1, 1)
    _write(heard, [[t, seq, 0, True] for t, seq in enumerate([1, 2, 5, 6])])
    assert repeats(heard) == (0, 0)  # numbers skipped by a takeover are no repeat


def test_takeovers_counts_changes_of_hands_in_the_interval_only(tmp_path: Path) -> None:
    c = cast(Cluster, type("C", (), {"tmp": tmp_path})())
    _write(tmp_path / "timeline.jsonl", [
        [1.0, "lease", "a"], [2.0, "chunk", 7], [3.0, "lease", "b"],  # before: not counted
        [11.0, "lease", "b"], [12.0, "lease", ""], [13.0, "lease", "b"],  # took it again
        [14.0, "lease", "a"], [15.0, "lease", "b"],  # two changes of hands
        [21.0, "lease", "a"]])  # after: not counted
    assert takeovers(c, 10.0, 20.0) == 2
    assert takeovers(c, 10.0, 13.5) == 0
    assert takeovers(c, 0.0, 20.0) == 3


def test_longest_pause_between_two_times(tmp_path: Path) -> None:
    heard = tmp_path / "heard.jsonl"
    _write(heard, [[t, k, 0, True] for k, t in enumerate([1.0, 1.1, 1.2, 3.2, 3.3, 8.3, 8.4])])
    assert longest_pause(heard, 1.05, 4.0) == pytest.approx(2.0)
    assert longest_pause(heard, 3.35, 8.0) == 0.0  # the 5 s pause ends after ``until``
    assert longest_pause(heard, 3.35, 9.0) == pytest.approx(5.0)
