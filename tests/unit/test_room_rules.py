"""The rules of a Space: every action, every refusal, with no I/O."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from townhall.problems import BadInput, Conflict, Forbidden, NotFound, Problem, Unprocessable
from townhall.room import rules
from townhall.room.rules import Actor
from townhall.room.snapshot import (
    COHOST_LIMIT,
    REQUEST_QUEUE_LIMIT,
    STAGE_LIMIT,
    Space,
    Speaker,
    Waiting,
    on_stage,
)

HOST = Actor("ada", "Ada")
BOB = Actor("bob", "Bob")
CY = Actor("cy", "Cy")


def live() -> Space:
    snap = rules.create("abcdefghij", HOST, title="Town hall", now=1.0)
    return rules.start(snap, HOST, now=2.0)


def act(snap: Space, who: Actor, action: str, target: str | None = None,
        **kw: Any) -> Space:
    return rules.apply(snap, who, action, target=target, now=3.0, **kw)


def speaker(snap: Space, who: Actor) -> Space:
    return act(act(snap, who, "request"), HOST, "approve", who.id)


def stage_ids(snap: Space) -> list[str]:
    return [p.id for p in snap.stage]


def refused(kind: type[Problem], slug: str, fn: Any, *args: Any, **kw: Any) -> None:
    with pytest.raises(kind) as err:
        fn(*args, **kw)
    assert err.value.instance_slug == slug


def test_create_puts_the_host_on_stage_scheduled() -> None:
    snap = rules.create("abcdefghij", HOST, title="  T  ", now=1.0)
    assert snap.state == "scheduled" and snap.title == "T" and snap.version == 1
    assert snap.stage == [Speaker("ada", "Ada", "host", muted=False, muted_by=None)]
    refused(Unprocessable, "title-required", rules.create, "x", HOST, title=" ", now=1.0)


def test_start_and_end_are_the_hosts() -> None:
    snap = rules.create("abcdefghij", HOST, title="T", now=1.0)
    refused(Forbidden, "not-host", rules.start, snap, BOB, now=2.0)
    snap = rules.start(snap, HOST, now=2.0)
    assert snap.state == "live" and snap.started_at == 2.0
    refused(Conflict, "not-startable", rules.start, snap, HOST, now=2.0)
    snap = speaker(snap, BOB)
    refused(Forbidden, "not-host", rules.end, snap, BOB, now=3.0)
    ended = rules.end(snap, HOST, now=4.0)
    assert ended.state == "ended" and ended.stage == [] and ended.ended_at == 4.0
    refused(Conflict, "space-ended", rules.end, ended, HOST, now=5.0)
    refused(Conflict, "space-ended", act, ended, CY, "request")


def test_actions_wait_for_live() -> None:
    snap = rules.create("abcdefghij", HOST, title="T", now=1.0)
    refused(Conflict, "not-live", act, snap, BOB, "request")


def test_request_approve_decline_withdraw() -> None:
    snap = act(live(), BOB, "request")
    assert [r.id for r in snap.requests] == ["bob"]
    refused(Conflict, "already-requested", act, snap, BOB, "request")
    refused(Forbidden, "not-moderator", act, snap, CY, "approve", "bob")
    refused(NotFound, "no-request", act, snap, HOST, "approve", "cy")
    refused(Unprocessable, "identity-required", act, snap, HOST, "approve")
    assert act(snap, HOST, "decline", "bob").requests == []
    assert act(snap, BOB, "withdraw").requests == []
    refused(NotFound, "no-request", act, live(), BOB, "withdraw")
    on = act(snap, HOST, "approve", "bob")
    assert stage_ids(on) == ["ada", "bob"] and on.requests == []
    refused(Conflict, "already-on-stage", act, on, BOB, "request")


def test_the_request_queue_is_capped() -> None:
    snap = live()
    for i in range(REQUEST_QUEUE_LIMIT):
        snap = act(snap, Actor(f"l{i}", "L"), "request")
    refused(Conflict, "request-queue-full", act, snap, BOB, "request")


def test_the_stage_holds_thirteen() -> None:
    snap = live()
    for i in range(STAGE_LIMIT - 1):
        snap = speaker(snap, Actor(f"s{i}", "S"))
    assert len(snap.stage) == STAGE_LIMIT
    snap = act(snap, BOB, "request")
    refused(Conflict, "stage-full", act, snap, HOST, "approve", "bob")


def test_invite_and_accept() -> None:
    snap = act(live(), HOST, "invite", "bob", name="Bobby")
    assert snap.invites[0].name == "Bobby"
    refused(Conflict, "no-invite", act, snap, CY, "accept")
    on = act(snap, BOB, "accept")
    assert stage_ids(on) == ["ada", "bob"] and on.invites == []
    refused(Conflict, "already-on-stage", act, on, HOST, "invite", "bob")


def test_leaving_and_moving_to_the_audience() -> None:
    snap = speaker(speaker(live(), BOB), CY)
    assert stage_ids(act(snap, BOB, "to_audience")) == ["ada", "cy"]
    refused(Forbidden, "not-moderator", act, snap, BOB, "to_audience", "cy")
    assert stage_ids(act(snap, HOST, "to_audience", "cy")) == ["ada", "bob"]
    refused(Conflict, "host-stays", act, snap, HOST, "to_audience")
    refused(Conflict, "host-stays", act, snap, BOB, "to_audience", "ada")
    refused(Conflict, "not-on-stage", act, snap, HOST, "to_audience", "zed")


def test_cohosts_moderate_but_not_each_other() -> None:
    snap = act(speaker(speaker(live(), BOB), CY), HOST, "add_cohost", "bob")
    assert snap.stage[1].role == "cohost"
    assert stage_ids(act(snap, BOB, "to_audience", "cy")) == ["ada", "bob"]
    snap = act(snap, HOST, "add_cohost", "cy")
    refused(Forbidden, "not-host", act, snap, BOB, "to_audience", "cy")
    refused(Forbidden, "not-host", act, snap, BOB, "remove", "cy")
    refused(Forbidden, "not-host", act, snap, BOB, "add_cohost", "cy")
    dave = Actor("dave", "Dave")
    snap = speaker(snap, dave)
    assert COHOST_LIMIT == 2
    refused(Conflict, "cohost-limit", act, snap, HOST, "add_cohost", "dave")
    refused(Conflict, "already-host", act, snap, HOST, "add_cohost", "ada")
    back = act(snap, HOST, "remove_cohost", "bob")
    assert back.stage[1].role == "speaker"
    refused(Conflict, "not-cohost", act, back, HOST, "remove_cohost", "bob")
    refused(Conflict, "not-on-stage", act, back, HOST, "add_cohost", "zed")


def test_mute_by_moderator_and_self_unmute() -> None:
    snap = speaker(live(), BOB)
    muted = act(snap, HOST, "mute", "bob")
    assert muted.stage[1].muted and muted.stage[1].muted_by == "ada"
    refused(Forbidden, "unmute-self-only", act, muted, HOST, "unmute", "bob")
    again = act(muted, BOB, "unmute")
    assert not again.stage[1].muted and again.stage[1].muted_by is None
    assert act(snap, BOB, "mute").stage[1].muted_by == "self"
    refused(Forbidden, "not-host", act, act(snap, HOST, "add_cohost", "bob"), BOB, "mute",
            "ada")
    refused(Forbidden, "not-moderator", act, speaker(snap, CY), CY, "mute", "bob")
    refused(Conflict, "not-on-stage", act, snap, CY, "mute")


def test_remove_and_block() -> None:
    snap = act(speaker(live(), BOB), CY, "request")
    gone = act(snap, HOST, "remove", "bob")
    assert stage_ids(gone) == ["ada"] and gone.blocked == []
    blocked = act(snap, HOST, "remove", "cy", block=True)
    assert blocked.requests == [] and blocked.blocked == ["cy"]
    refused(Forbidden, "blocked", act, blocked, CY, "request")
    refused(Forbidden, "blocked", act, blocked, HOST, "invite", "cy")
    refused(Forbidden, "not-host", act, snap, HOST, "remove", "ada")
    refused(Forbidden, "not-moderator", act, snap, BOB, "remove", "cy")


def test_unknown_action() -> None:
    refused(BadInput, "unknown-action", act, live(), HOST, "dance")


def test_rules_never_change_their_input() -> None:
    snap = live()
    before = repr(snap)
    act(snap, BOB, "request")
    rules.end(snap, HOST, now=9.0)
    assert repr(snap) == before


def test_space_ids_are_ten_safe_characters() -> None:
    assert rules.is_space_id(rules.new_space_id())
    for bad in ("", "short", "ABCDEFGHIJ", "abcdefghi.", "abcdefghij0", "a*cdefghij"):
        assert not rules.is_space_id(bad)


# The permission matrix: each moderation action, aimed at someone else, by each kind of
# person. None = allowed; otherwise the refusal's slug.
CO, SP, LI, RM, BL = (Actor(i, i.title()) for i in ("co", "sp", "li", "rm", "bl"))
MODS_ONLY = {"host": None, "cohost": None, "speaker": "not-moderator",
             "listener": "not-moderator", "removed": "not-moderator",
             "blocked": "not-moderator"}
HOST_ONLY = {"host": None, **{r: "not-host" for r in
                              ("cohost", "speaker", "listener", "removed", "blocked")}}
MATRIX: dict[str, tuple[str, dict[str, str | None]]] = {
    "approve": ("asker", MODS_ONLY),
    "decline": ("asker", MODS_ONLY),
    "invite": ("guest", MODS_ONLY),
    "to_audience": ("target", MODS_ONLY),
    "mute": ("target", MODS_ONLY),
    "remove": ("target", MODS_ONLY),
    "unmute": ("quiet", {r: "unmute-self-only" for r in MODS_ONLY}),
    "add_cohost": ("target", HOST_ONLY),
    "remove_cohost": ("co", HOST_ONLY),
}
ACTORS = {"host": HOST, "cohost": CO, "speaker": SP, "listener": LI, "removed": RM,
          "blocked": BL}


def crowd() -> Space:
    """A live Space with one of everybody: co-host, speakers, a pending request."""
    snap = live()
    for who in (CO, SP, Actor("target", "T"), Actor("quiet", "Q")):
        snap = speaker(snap, who)
    snap = act(snap, HOST, "add_cohost", "co")
    snap = act(act(snap, RM, "request"), HOST, "remove", "rm")
    snap = act(act(snap, BL, "request"), HOST, "remove", "bl", block=True)
    snap = act(snap, HOST, "mute", "quiet")
    return act(snap, Actor("asker", "A"), "request")


def speaker_entry(who: Actor) -> Speaker:
    return Speaker(who.id, who.name, "speaker", muted=False, muted_by=None)


def without(items: list[Any], who: str) -> list[Any]:
    return [i for i in items if i.id != who]


def person(snap: Space, who: str) -> Speaker:
    """``who``'s entry in ``snap``'s stage itself (to be changed in place)."""
    found = next((p for p in snap.stage if p.id == who), None)
    assert found is not None
    return found


def expected_snapshot(action: str, before: Space, actor: Actor,
                      who: str) -> Space:
    """The whole snapshot ``action`` by ``actor`` on ``who`` must give: every key, so a
    rule that also changes something else (or not quite this) fails."""
    out = copy.deepcopy(before)
    if action == "approve":
        name = next(r.name for r in before.requests if r.id == who)
        out.stage.append(speaker_entry(Actor(who, name)))
        out.requests = without(out.requests, who)
        out.invites = without(out.invites, who)
    elif action in ("decline", "withdraw"):
        out.requests = without(out.requests, who)
    elif action == "invite":
        out.invites.append(Waiting(who, who, 3.0))
    elif action == "accept":
        out.stage.append(speaker_entry(actor))
        out.requests = without(out.requests, who)
        out.invites = without(out.invites, who)
    elif action == "to_audience":
        out.stage = without(out.stage, who)
    elif action == "remove":
        out.stage = without(out.stage, who)
        out.requests = without(out.requests, who)
        out.invites = without(out.invites, who)
    elif action in ("mute", "unmute"):
        muted = action == "mute"
        person(out, who).muted = muted
        person(out, who).muted_by = ("self" if who == actor.id else actor.id) if muted \
            else None
    elif action in ("add_cohost", "remove_cohost"):
        person(out, who).role = "cohost" if action == "add_cohost" else "speaker"
    else:
        raise AssertionError(f"no expectation for {action}")
    assert out != before, f"{action} on {who} would change nothing here"
    return out


@pytest.mark.parametrize("action", sorted(MATRIX))
@pytest.mark.parametrize("role", sorted(ACTORS))
def test_permission_matrix(action: str, role: str) -> None:
    target, outcomes = MATRIX[action]
    snap = crowd()
    if outcomes[role] is None:
        assert act(snap, ACTORS[role], action, target) == expected_snapshot(
            action, snap, ACTORS[role], target)
    else:
        with pytest.raises(Problem) as err:
            act(snap, ACTORS[role], action, target)
        assert err.value.instance_slug == outcomes[role]
        assert err.value.status == 403


@pytest.mark.parametrize(("role", "slug"), [
    ("host", "already-on-stage"), ("cohost", "already-on-stage"),
    ("speaker", "already-on-stage"), ("listener", None), ("removed", None),
    ("blocked", "blocked")])
def test_who_may_ask_to_speak(role: str, slug: str | None) -> None:
    if slug is None:
        assert act(crowd(), ACTORS[role], "request").requests[-1].id == ACTORS[role].id
    else:
        refused(Problem, slug, act, crowd(), ACTORS[role], "request")


def test_every_problem_type_has_one_status() -> None:
    """A client may switch on the type alone: no slug is raised with two statuses."""
    import ast
    from pathlib import Path

    import townhall
    root = Path(townhall.__file__).parent
    seen: dict[str, set[str]] = {}
    for path in [root / "room" / "rules.py", root / "sdp.py",
                 *sorted((root / "api").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                for kw in node.exc.keywords:
                    if (kw.arg == "slug" and isinstance(kw.value, ast.Constant)
                            and isinstance(kw.value.value, str)):
                        seen.setdefault(kw.value.value, set()).add(ast.unparse(node.exc.func)
                                                                   .split(".")[-1])
    assert len(seen) > 20
    assert {slug: kinds for slug, kinds in seen.items() if len(kinds) > 1} == {}


# The same matrix for what people do to themselves. None = allowed (then exactly the
# change expected_snapshot describes must show); otherwise the refusal's slug. The
# listener has asked to speak and been invited.
ON_STAGE = {"host": None, "cohost": None, "speaker": None, "listener": "not-on-stage",
            "removed": "not-on-stage", "blocked": "not-on-stage"}
SELF_MATRIX: dict[str, dict[str, str | None]] = {
    "withdraw": {r: (None if r == "listener" else "no-request") for r in ACTORS},
    "accept": {r: (None if r == "listener" else "no-invite") for r in ACTORS},
    "to_audience": {**ON_STAGE, "host": "host-stays"},
    "mute": ON_STAGE,
    "unmute": ON_STAGE,
}


@pytest.mark.parametrize("action", sorted(SELF_MATRIX))
@pytest.mark.parametrize("role", sorted(ACTORS))
def test_permission_matrix_on_oneself(action: str, role: str) -> None:
    snap = act(act(crowd(), LI, "request"), HOST, "invite", "li")
    snap = act(snap, HOST, "mute", "sp")  # muted by the host: still theirs to unmute
    expected, who = SELF_MATRIX[action][role], ACTORS[role]
    standing = on_stage(snap, who.id)
    if action == "unmute" and standing is not None and not standing.muted:
        snap = act(snap, who, "mute")  # so that unmuting has something to undo
    if expected is None:
        assert act(snap, who, action) == expected_snapshot(action, snap, who, who.id)
    else:
        refused(Problem, expected, act, snap, who, action)
