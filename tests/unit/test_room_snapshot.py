"""The snapshot type and its one serializer: documents stored before it still read and
write back byte for byte, unknown keys survive, and the public view hides internal keys."""

from __future__ import annotations

import json

import pytest

from townhall.room import rules
from townhall.room.rules import Actor
from townhall.room.snapshot import (
    EdgeSeen,
    Person,
    Recording,
    SnapshotError,
    Space,
    Speaker,
    Waiting,
    clone,
    decode,
    encode,
    from_doc,
    public_view,
    same_public,
    to_doc,
)

# Written by the dict-based code this type replaced (rules.create, apply, counting.fold,
# the recorder), exactly as the bucket held them: a rolling restart reads these.
STORED_LIVE = (
    '{"id":"k3v9x2m4qa","title":"Town hall","description":"Monthly","state":"live",'
    '"version":9,"private":true,"signed_in_only":false,"host":{"id":"ada","name":"Ada"},'
    '"scheduled_start":null,"created_at":1795576000.5,"started_at":1795576010.25,'
    '"ended_at":null,"stage":[{"id":"ada","name":"Ada","role":"host","muted":false,'
    '"muted_by":null},{"id":"bob","name":"Bob","role":"cohost","muted":true,'
    '"muted_by":"ada"}],"requests":[{"id":"ed","name":"Ed","at":1795576030.0}],'
    '"invites":[{"id":"cy","name":"cy","at":1795576020.0}],"listeners":7,'
    '"reactions":{"👏":3,"🔥":2},"recording":true,"_record_spans":[[1795576010.25,null]],'
    '"_blocked":["g-1"],"_edges":{"e1":{"listeners":7,"url":null,"capacity":100,'
    '"at":1795576031.0}},"_allowed":["dee"],"_blocked_nets":["n1"],"_nets":{"g-1":"n1"}}')
STORED_ENDED = (
    '{"id":"k3v9x2m4qa","title":"Town hall","description":"Monthly","state":"ended",'
    '"version":10,"private":true,"signed_in_only":false,"host":{"id":"ada","name":"Ada"},'
    '"scheduled_start":null,"created_at":1795576000.5,"started_at":1795576010.25,'
    '"ended_at":1795576100.0,"stage":[],"requests":[],"invites":[],"listeners":7,'
    '"reactions":{"👏":3,"🔥":2},"recording":{"state":"ready",'
    '"url":"/replay/k3v9x2m4qa.opus","duration":88.125,"bytes":70123,'
    '"m4a":"/replay/k3v9x2m4qa.m4a","m4a_bytes":71000,"ready_at":1795576110.0,'
    '"expires_at":1798168100.0},"_record_spans":[[1795576010.25,1795576100.0]],'
    '"_blocked":["g-1"],"_edges":{"e1":{"listeners":7,"url":null,"capacity":100,'
    '"at":1795576031.0}},"_allowed":["dee"],"_blocked_nets":["n1"],"_nets":{"g-1":"n1"},'
    '"_clips":["k3v9x2m4qa-0a1b2c3d4e"]}')
CREATED = (
    '{"id":"abcdefghij","title":"T","description":"","state":"scheduled","version":1,'
    '"private":false,"signed_in_only":false,"host":{"id":"ada","name":"Ada"},'
    '"scheduled_start":"2026-11-25T20:00:00Z","created_at":1.0,"started_at":null,'
    '"ended_at":null,"stage":[{"id":"ada","name":"Ada","role":"host","muted":false,'
    '"muted_by":null}],"requests":[],"invites":[],"listeners":0,"reactions":{},'
    '"recording":false,"_record_spans":[],"_blocked":[],"_edges":{},"_allowed":[],'
    '"_blocked_nets":[],"_nets":{}}')


def test_a_live_document_stored_by_the_dict_code_reads_typed_and_writes_back_unchanged(
        ) -> None:
    space = decode(STORED_LIVE.encode())
    assert space.state == "live" and space.version == 9 and space.private
    assert space.host == Person("ada", "Ada")
    assert space.stage[1] == Speaker("bob", "Bob", "cohost", muted=True, muted_by="ada")
    assert space.requests == [Waiting("ed", "Ed", 1795576030.0)]
    assert space.recording is True and space.record_spans == [[1795576010.25, None]]
    assert space.edges == {"e1": EdgeSeen(7, None, 100, 1795576031.0)}
    assert (space.blocked, space.allowed, space.blocked_nets, space.nets) == (
        ["g-1"], ["dee"], ["n1"], {"g-1": "n1"})
    assert encode(space) == STORED_LIVE.encode()


def test_an_ended_document_with_its_recording_reads_typed_and_writes_back_unchanged(
        ) -> None:
    space = decode(STORED_ENDED)
    assert isinstance(space.recording, Recording) and space.finished is space.recording
    assert space.recording.m4a_bytes == 71000 and space.recording.expired_at is None
    assert space.clips == ["k3v9x2m4qa-0a1b2c3d4e"]
    assert encode(space) == STORED_ENDED.encode()


def test_rules_create_writes_what_the_dict_code_wrote() -> None:
    made = rules.create("abcdefghij", Actor("ada", "Ada"), title="T",
                        scheduled_start="2026-11-25T20:00:00Z", now=1.0)
    assert encode(made) == CREATED.encode()


def test_the_public_view_is_the_document_without_its_internal_keys() -> None:
    doc = json.loads(STORED_ENDED)
    view = public_view(decode(STORED_ENDED))
    assert view == {k: v for k, v in doc.items() if not k.startswith("_")}
    assert "_clips" not in view and "_nets" not in view and view["recording"]["bytes"] == 70123


def test_keys_a_newer_version_wrote_survive_and_only_public_ones_are_shown() -> None:
    doc = json.loads(STORED_LIVE)
    doc["topic"] = "music"
    doc["_shadow"] = ["x"]
    doc["stage"][0]["badge"] = "gold"
    space = from_doc(doc)
    assert space.extra == {"topic": "music", "_shadow": ["x"]}
    assert to_doc(space) == doc
    view = public_view(space)
    assert view["topic"] == "music" and "_shadow" not in view
    assert view["stage"][0]["badge"] == "gold"


def test_an_older_document_without_the_later_keys_reads_with_their_defaults() -> None:
    doc = json.loads(CREATED)
    for key in ("signed_in_only", "_record_spans", "_allowed", "_blocked_nets", "_nets"):
        del doc[key]
    space = from_doc(doc)
    assert not space.signed_in_only and space.allowed == [] and space.nets == {}


@pytest.mark.parametrize("broken", [
    b"not json", b"[]", b'{"id":"abcdefghij"}',
    CREATED.replace('"state":"scheduled"', '"state":"paused"').encode(),
    CREATED.replace('"version":1', '"version":"1"').encode(),
    CREATED.replace('"listeners":0', '"listeners":true').encode(),
    CREATED.replace('"recording":false', '"recording":"yes"').encode(),
    CREATED.replace('"muted":false', '"muted":0').encode(),
])
def test_a_malformed_document_is_a_snapshot_error(broken: bytes) -> None:
    with pytest.raises(SnapshotError):
        decode(broken)


def test_a_space_is_its_own_copy_after_a_rule() -> None:
    before = decode(STORED_LIVE)
    after = rules.apply(before, Actor("bob", "Bob"), "mute", now=5.0)
    assert before == decode(STORED_LIVE)  # the rule changed a copy
    assert after.speaker("bob") == Speaker("bob", "Bob", "cohost", True, "self")
    assert isinstance(after, Space)


def test_a_clone_shares_nothing_with_its_original() -> None:
    original = decode(STORED_ENDED)
    original.extra["topic"] = {"tags": ["a"]}
    copy = clone(original)
    assert copy == original and copy is not original
    copy.record_spans[0][1] = 0.0
    copy.edges["e1"].listeners = 0
    copy.extra["topic"]["tags"].append("b")
    assert isinstance(copy.recording, Recording)
    copy.recording.bytes = 0
    assert original.record_spans == [[1795576010.25, 1795576100.0]]
    assert original.edges["e1"].listeners == 7
    assert original.extra["topic"] == {"tags": ["a"]}
    assert original.finished is not None and original.finished.bytes == 70123


def test_same_public_agrees_with_comparing_the_public_views() -> None:
    base = decode(STORED_LIVE)
    variants = [clone(base) for _ in range(6)]
    variants[0].listeners += 1                  # public
    variants[1].stage[1].muted = False          # public, nested
    variants[2].blocked.append("eve")           # internal
    variants[3].edges["e1"].at += 1             # internal, nested
    variants[4].extra["topic"] = "x"            # public, unknown to this version
    variants[5].extra["_shadow"] = 1            # internal, unknown to this version
    for other in variants:
        assert same_public(base, other) == (public_view(base) == public_view(other))
    assert [same_public(base, v) for v in variants] == [False, False, True, True, False,
                                                         True]
