"""The events a change of a Space makes: a diff of two snapshots."""

import json
from typing import Any

from townhall.hooks.events import (
    ENDED,
    LISTENERS_MILESTONE,
    RECORDING_READY,
    SCHEDULED,
    SPEAKER_JOINED,
    SPEAKER_LEFT,
    STARTED,
    Event,
    events_between,
)
from townhall.room import rules
from townhall.room.rules import Actor
from townhall.room.snapshot import from_doc, to_doc

ADA = Actor("ada", "Ada")


def space(**changes: Any) -> dict[str, Any]:
    """A new Space's document (JSON keys), with ``changes``."""
    return to_doc(rules.create("k3v9x2m4qa", ADA, title="Night", now=100.0)) | changes


def diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Event]:
    """The events between two documents, read as the api reads them from the bucket."""
    return events_between(None if old is None else from_doc(old),
                          None if new is None else from_doc(new))


def start(doc: dict[str, Any]) -> dict[str, Any]:
    return to_doc(rules.start(from_doc(doc), ADA, now=200.0))


def bump(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**doc, **changes, "version": doc["version"] + 1}


def test_creation_is_scheduled() -> None:
    (event,) = diff(None, space())
    assert event.type == SCHEDULED
    assert event.id == "evt_k3v9x2m4qa_1_space.scheduled"
    assert event.data["space"]["title"] == "Night"


def test_start_and_end() -> None:
    s = space()
    live = bump(start(s))
    assert [e.type for e in diff(s, live)] == [STARTED]
    ended = bump(to_doc(rules.end(from_doc(live), ADA, now=300.0)))
    # The stage empties when a Space ends: its people leave before it ends.
    assert [e.type for e in diff(live, ended)] == [SPEAKER_LEFT, ENDED]


def test_speakers_join_and_leave() -> None:
    s = space(state="live")
    bob = {"id": "bob", "name": "Bob", "role": "speaker", "muted": False, "muted_by": None}
    joined = bump(s, stage=[*s["stage"], bob])
    (event,) = diff(s, joined)
    assert event.type == SPEAKER_JOINED
    assert event.data["speaker"] == {"id": "bob", "name": "Bob", "role": "speaker"}
    assert event.id == f"evt_k3v9x2m4qa_{joined['version']}_speaker.joined_bob"
    left = bump(joined, stage=s["stage"])
    assert [(e.type, e.data["speaker"]["id"]) for e in diff(joined, left)] == \
        [(SPEAKER_LEFT, "bob")]


def test_a_mute_is_no_event() -> None:
    s = space(state="live")
    muted = bump(s, stage=[{**s["stage"][0], "muted": True, "muted_by": "self"}])
    assert diff(s, muted) == []


def test_milestones_once_each_whatever_the_step() -> None:
    s = space(state="live", listeners=99)
    big = bump(s, listeners=10_500)
    marks = [e for e in diff(s, big)]
    assert [e.type for e in marks] == [LISTENERS_MILESTONE] * 3
    assert [e.data["milestone"] for e in marks] == [100, 1000, 10_000]
    # The same milestone crossed again later has the same id: receivers drop it.
    dip = bump(big, listeners=50)
    again = bump(dip, listeners=150)
    assert diff(big, dip) == []
    assert [e.id for e in diff(dip, again)] == ["evt_k3v9x2m4qa_listeners_100"]


def test_recording_ready_when_the_snapshot_says_so() -> None:
    s = space(state="ended")
    ready = bump(s, recording={"state": "ready", "url": "/replay/k3v9x2m4qa.opus"})
    (event,) = diff(s, ready)
    assert event.type == RECORDING_READY
    assert event.data["recording"]["url"] == "/replay/k3v9x2m4qa.opus"
    assert diff(ready, bump(ready, title="x")) == []


def test_deletion_and_internal_changes_are_no_events() -> None:
    s = space()
    assert diff(s, None) == []
    assert diff(s, {**s, "_edges": {"e1": {"listeners": 5, "at": 1.0}}}) == []


def test_ids_are_the_same_for_every_api_that_derives_them() -> None:
    s = space()
    live = bump(start(s))
    assert diff(s, live) == diff(json.loads(json.dumps(s)),
                                                      json.loads(json.dumps(live)))


def test_the_body_is_the_standard_shape_without_internal_keys() -> None:
    (event,) = diff(None, space())
    body = json.loads(event.body(0.0))
    assert body["type"] == SCHEDULED
    assert body["timestamp"] == "1970-01-01T00:00:00.000000Z"
    assert not any(k.startswith("_") for k in body["data"]["space"])
