"""Recording in the rules of a Space: the flag, the host's toggle, spans of recorded time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from townhall.problems import Conflict, Forbidden
from townhall.recording.recorder import in_spans
from townhall.room import rules
from townhall.room.rules import Actor
from townhall.room.snapshot import Recording

ADA = Actor("ada", "Ada")
BOB = Actor("bob", "Bob")


def test_recorded_from_the_start_to_the_end() -> None:
    snap = rules.create("abcdefghij", ADA, title="T", record=True, now=1.0)
    assert snap.recording is True and snap.record_spans == []
    snap = rules.start(snap, ADA, now=10.0)
    assert snap.record_spans == [[10.0, None]]
    snap = rules.end(snap, ADA, now=20.0)
    assert snap.record_spans == [[10.0, 20.0]]
    assert snap.recording is True  # until the recorder says it is ready


def test_toggles_open_and_close_spans_and_are_the_hosts() -> None:
    snap = rules.start(rules.create("abcdefghij", ADA, title="T", now=1.0), ADA, now=2.0)
    assert snap.recording is False
    with pytest.raises(Forbidden):
        rules.apply(snap, BOB, "record_on", now=3.0)
    snap = rules.apply(snap, ADA, "record_on", now=3.0)
    snap = rules.apply(snap, ADA, "record_on", now=3.5)  # already on: no new span
    snap = rules.apply(snap, ADA, "record_off", now=5.0)
    assert snap.recording is False and snap.record_spans == [[3.0, 5.0]]
    ended = rules.end(snap, ADA, now=9.0)
    assert ended.recording is True  # off at the end, but something was kept


def test_nothing_recorded_means_no_recording_at_the_end() -> None:
    snap = rules.create("abcdefghij", ADA, title="T", record=True, now=1.0)
    snap = rules.apply(snap, ADA, "record_off", now=2.0)  # while scheduled
    snap = rules.start(snap, ADA, now=3.0)
    assert snap.record_spans == []
    assert rules.end(snap, ADA, now=4.0).recording is False
    with pytest.raises(Conflict):
        rules.apply(rules.end(snap, ADA, now=4.0), ADA, "record_on", now=5.0)


def test_toggling_is_bounded() -> None:
    snap = rules.start(rules.create("abcdefghij", ADA, title="T", now=1.0), ADA, now=2.0)
    for i in range(rules.RECORD_SPANS_LIMIT):
        snap = rules.apply(snap, ADA, "record_on", now=3.0 + i)
        snap = rules.apply(snap, ADA, "record_off", now=3.5 + i)
    with pytest.raises(Conflict):
        rules.apply(snap, ADA, "record_on", now=1000.0)


def test_in_spans() -> None:
    spans: list[list[float | None]] = [[10.0, 20.0], [30.0, None]]
    assert [in_spans(spans, t) for t in (9.9, 10.0, 20.0, 25.0, 30.0, 1e9)] == [
        False, True, True, False, True, True]
    assert not in_spans([], 5.0)


def test_a_recorded_space_outlives_its_retention_while_its_recording_is_kept() -> None:
    from townhall.room.index import item_of

    snap = rules.start(rules.create("abcdefghij", ADA, title="T", record=True, now=1.0),
                       ADA, now=2.0)
    ended = rules.end(snap, ADA, now=3.0)
    assert item_of(ended, 1).expires_from is None  # the recording is still being made
    ready = replace(ended, recording=Recording(url="/replay/abcdefghij.opus",
                                               expires_at=999.0))
    assert item_of(ready, 2).expires_from == 999.0
    plain = rules.end(rules.start(rules.create("abcdefghij", ADA, title="T", now=1.0), ADA,
                                  now=2.0), ADA, now=3.0)
    assert item_of(plain, 3).expires_from == 3.0


def test_the_folded_recording_is_the_webhooks_recording_ready() -> None:
    from townhall.hooks.events import RECORDING_READY, events_between

    snap = rules.start(rules.create("abcdefghij", ADA, title="T", record=True, now=1.0),
                       ADA, now=2.0)
    ended = replace(rules.end(snap, ADA, now=3.0), version=5)
    # What the recorder folds in (townhall.recording.recorder.SpaceRecording._ready).
    ready = replace(ended, version=6, recording=Recording(state="ready", url="/replay/x.opus"))
    assert RECORDING_READY not in [e.type for e in events_between(snap, ended)]
    assert RECORDING_READY in [e.type for e in events_between(ended, ready)]
