"""The OpenAPI schema of the snapshot is generated from its one definition
(townhall.room.snapshot), and what the codec writes is valid against it."""

from __future__ import annotations

import dataclasses

from townhall.api.schemas import Snapshot, SpaceList, public_model
from townhall.room import rules
from townhall.room.jsonshape import json_key
from townhall.room.snapshot import Recording, Space, Speaker, public_view


def test_every_public_field_is_in_the_schema_and_no_internal_one() -> None:
    schema = Snapshot.model_json_schema()
    public = {json_key(f) for f in dataclasses.fields(Space)
              if f.name != "extra" and not f.metadata.get("internal")}
    assert set(schema["properties"]) == public
    assert not any(k.startswith("_") or k in ("extra", "blocked", "nets")
                   for k in schema["properties"])
    # Always written, so required; the order is the JSON's.
    assert schema["required"] == list(schema["properties"])
    assert list(schema["properties"])[:4] == ["id", "title", "description", "state"]


def test_constraints_and_descriptions_come_from_the_dataclass_fields() -> None:
    props = Snapshot.model_json_schema()["properties"]
    assert props["id"]["pattern"] == "^[a-z0-9]{10}$"
    assert props["version"]["minimum"] == 1 and props["listeners"]["minimum"] == 0
    assert props["state"]["enum"] == ["scheduled", "live", "ended"]
    on_stage = public_model(Speaker).model_json_schema()
    assert on_stage["properties"]["role"]["enum"] == ["host", "cohost", "speaker"]
    assert on_stage["properties"]["muted_by"]["description"].startswith("null")


def test_optional_recording_keys_are_left_out_not_null() -> None:
    schema = public_model(Recording).model_json_schema()
    assert "m4a" not in schema["required"] and "expired_at" not in schema["required"]
    assert schema["properties"]["m4a"]["type"] == "string"  # never null when present


def test_what_the_codec_writes_validates_against_the_schema() -> None:
    host = rules.Actor("ada", "Ada")
    snap = rules.start(rules.create("abcdefghij", host, title="T", record=True, now=1.0),
                       host, now=2.0)
    snap = rules.apply(snap, rules.Actor("bob", "Bob"), "request", now=3.0)
    ended = dataclasses.replace(rules.end(snap, host, now=4.0), recording=Recording(
        url="/replay/abcdefghij.opus", duration=2.0, bytes=10, ready_at=5.0,
        expires_at=6.0))
    for space in (snap, ended):
        Snapshot.model_validate(public_view(space), strict=True)
    SpaceList.model_validate({"spaces": [public_view(snap)], "next": None})
