"""Who may publish what on townhall's NATS (bus/permissions.py), checked with NATS's own
subject-matching rules on plain data."""

from __future__ import annotations

import json

import pytest

from townhall.bus import subjects
from townhall.bus.embedded import server_config
from townhall.bus.permissions import (
    ADMIN,
    Permissions,
    permissions_of,
    user_for,
    user_names,
)


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcards: ``*`` is one token, a final ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def may_publish(user: str, subject: str) -> bool:
    return any(matches(p, subject) for p in permissions_of(user).publish)


SPACE = "abcdefghij"
MEDIA = subjects.media(SPACE)
SPACE_DOC = subjects.kv_key(subjects.SPACES_BUCKET, SPACE)
LEASE = subjects.kv_key(subjects.LEASES_BUCKET, SPACE)
CONTROL = subjects.control(SPACE)
STATE = subjects.state(SPACE)
STATS = subjects.stats(SPACE, "edge-1")
UPDATE_SPACES = f"$JS.API.STREAM.UPDATE.KV_{subjects.SPACES_BUCKET}"
CREATE_SPACES = f"$JS.API.STREAM.CREATE.KV_{subjects.SPACES_BUCKET}"
DELETE_SPACES = f"$JS.API.STREAM.DELETE.KV_{subjects.SPACES_BUCKET}"


def test_the_matcher_follows_nats_rules() -> None:
    assert matches("townhall.*.media", MEDIA)
    assert not matches("townhall.*.media", "townhall.stage.whip.x")
    assert matches("$KV.spaces.>", SPACE_DOC)
    assert not matches("$KV.spaces.>", "$KV.spaces")


@pytest.mark.parametrize("subject", [MEDIA, SPACE_DOC, CONTROL, STATE, LEASE, UPDATE_SPACES,
                                     CREATE_SPACES, DELETE_SPACES, "$JS.API.STREAM.PURGE.MEDIA"])
def test_an_edge_publishes_none_of_these(subject: str) -> None:
    assert not may_publish("edge", subject)


@pytest.mark.parametrize("subject", [SPACE_DOC, CONTROL, STATE, UPDATE_SPACES, CREATE_SPACES,
                                     DELETE_SPACES])
def test_a_stage_publishes_none_of_these(subject: str) -> None:
    assert not may_publish("stage", subject)


def test_the_api_never_speaks_for_the_stage() -> None:
    assert not may_publish("api", MEDIA)
    assert not may_publish("api", subjects.levels(SPACE))
    assert not may_publish("api+edge", MEDIA)


def test_each_role_may_do_its_own_work() -> None:
    assert may_publish("edge", STATS) and may_publish("edge", subjects.edge_announce("e1"))
    assert may_publish("stage", MEDIA) and may_publish("stage", LEASE)
    assert may_publish("stage", subjects.stage_report("s1"))
    assert permissions_of("stage").allow_responses  # WHIP answers to the api's requests
    assert may_publish("api", SPACE_DOC) and may_publish("api", CONTROL)
    assert may_publish("api", subjects.whip(SPACE)) and may_publish("api", UPDATE_SPACES)
    for role in ("edge", "stage"):  # reads, and the idempotent ensure_topology
        assert may_publish(role, f"$JS.API.DIRECT.GET.KV_spaces.{SPACE_DOC}")
        assert may_publish(role, f"$JS.API.STREAM.CREATE.{subjects.MEDIA_STREAM}")
        assert may_publish(role, "$JS.API.STREAM.INFO.KV_spaces")
    assert may_publish(ADMIN, DELETE_SPACES)


def test_only_the_api_moves_stream_leaders() -> None:
    # townhall.api.leaders: the steering api asks leaders to step down and writes its key.
    stepdown = f"$JS.API.STREAM.LEADER.STEPDOWN.{subjects.MEDIA_STREAM}"
    assert may_publish("api", stepdown)
    assert may_publish("api", f"$KV.{subjects.RECORDERS_BUCKET}.leaders")
    assert not may_publish("stage", stepdown) and not may_publish("edge", stepdown)


def test_a_process_with_several_roles_gets_the_union() -> None:
    both = permissions_of("api+edge")
    assert set(both.publish) == set(permissions_of("api").publish) | set(
        permissions_of("edge").publish)
    assert not both.allow_responses
    assert (Permissions(("a",), ("b",)) | Permissions(("a", "c"), ("b",), True)) == \
        Permissions(("a", "c"), ("b",), True)


def test_user_names_cover_every_set_of_roles() -> None:
    names = user_names()
    assert names[0] == ADMIN and len(names) == len(set(names)) == 8
    assert user_for(["edge", "api"]) == "api+edge" and "api+edge" in names
    assert user_for(("stage", "edge", "api")) == "api+stage+edge" in names
    with pytest.raises(ValueError):
        user_for([])
    with pytest.raises(ValueError):
        user_for(["root"])
    with pytest.raises(ValueError):
        permissions_of("root")


def test_the_config_is_json_with_every_user_and_its_permissions() -> None:
    users = {name: f"pw-{i}\"'$x" for i, name in enumerate(user_names())}
    parsed = json.loads(server_config(users))["authorization"]["users"]
    by_name = {u["user"]: u for u in parsed}
    assert set(by_name) == set(users)
    assert by_name["edge"]["password"] == users["edge"]
    assert by_name["edge"]["permissions"]["publish"]["allow"] == list(
        permissions_of("edge").publish)
    assert by_name["stage"]["permissions"]["allow_responses"] is True


def test_only_the_api_publishes_the_aac_rendition() -> None:
    aac = subjects.aac(SPACE)
    assert may_publish("api", aac)
    assert not may_publish("edge", aac) and not may_publish("stage", aac)
    assert not matches("townhall.*.media", aac)  # the stream HLSAAC never overlaps MEDIA
    for role in ("edge", "stage"):  # every process's ensure_topology creates HLSAAC too
        assert may_publish(role, f"$JS.API.STREAM.CREATE.{subjects.AAC_STREAM}")
