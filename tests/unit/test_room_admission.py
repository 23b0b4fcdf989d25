"""Invitations, who is let in, blocks and Space settings in the room rules (no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from townhall.problems import Conflict, Forbidden, Problem
from townhall.room import rules
from townhall.room.snapshot import ALLOW_LIMIT, INVITE_LIMIT, public_view

ADA = rules.Actor("ada", "Ada")


def live() -> rules.Snapshot:
    return rules.start(rules.create("s000000001", ADA, title="T", now=0.0), ADA, now=1.0)


def slug(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(Problem) as refused:
        fn(*args, **kw)  # type: ignore[operator]
    return refused.value.instance_slug


@pytest.mark.parametrize("target", ["", "a b", "x" * 65, "ada\n", "<script>", "é"])
def test_invite_takes_only_valid_identities(target: str) -> None:
    got = slug(rules.apply, live(), ADA, "invite", target=target, now=2.0)
    assert got in ("bad-identity", "identity-required")


def test_invite_names_are_checked_and_the_list_is_bounded() -> None:
    assert slug(rules.apply, live(), ADA, "invite", target="bob", name="\u202eboB",
                now=2.0) == "bidi-control"
    snap = live()
    for i in range(INVITE_LIMIT):
        snap = rules.apply(snap, ADA, "invite", target=f"p{i}", now=2.0)
    with pytest.raises(Conflict) as full:
        rules.apply(snap, ADA, "invite", target="one-more", now=2.0)
    assert full.value.instance_slug == "invite-list-full"
    again = rules.apply(snap, ADA, "invite", target="p0", name="P zero", now=3.0)
    assert len(again.invites) == INVITE_LIMIT        # re-inviting does not grow it


def test_titles_and_descriptions_are_checked() -> None:
    assert slug(rules.create, "s000000001", ADA, title="Hi\x00", now=0.0) == (
        "control-character")
    assert slug(rules.create, "s000000001", ADA, title="\u200b", now=0.0) in (
        "blank-text", "title-required")
    assert slug(rules.create, "s000000001", ADA, title="T", description="\x1b[2J",
                now=0.0) == "control-character"


def test_allow_list_is_internal_moderated_and_bounded() -> None:
    snap = rules.apply(live(), ADA, "allow", target="bob", now=2.0)
    assert snap.allowed == ["bob"] and "bob" not in str(public_view(snap))
    with pytest.raises(Forbidden):
        rules.apply(snap, rules.Actor("bob", "Bob"), "allow", target="eve", now=2.0)
    assert rules.apply(snap, ADA, "disallow", target="bob", now=2.0).allowed == []
    full = replace(snap, allowed=[f"p{i}" for i in range(ALLOW_LIMIT)])
    assert slug(rules.apply, full, ADA, "allow", target="bob2", now=2.0) == "allow-list-full"
    # Scheduled Spaces can be prepared before they go live.
    scheduled = rules.create("s000000002", ADA, title="T", private=True, now=0.0)
    assert rules.apply(scheduled, ADA, "allow", target="bob", now=1.0).allowed == ["bob"]


def test_blocking_drops_the_allowance_and_remembers_the_guests_network() -> None:
    snap = rules.apply(live(), ADA, "allow", target="g-1", now=2.0)
    snap = rules.apply(snap, rules.Actor("g-1", "G", net="n1"), "request", now=2.0)
    assert snap.nets == {"g-1": "n1"} and "n1" not in str(public_view(snap))
    snap = rules.apply(snap, ADA, "remove", target="g-1", block=True, now=3.0)
    assert snap.allowed == [] and snap.blocked_nets == ["n1"]
    assert slug(rules.apply, snap, ADA, "allow", target="g-1", now=4.0) == "blocked"


def test_only_the_host_toggles_signed_in_only() -> None:
    snap = rules.apply(live(), ADA, "signed_in_only_on", now=2.0)
    assert snap.signed_in_only is True and public_view(snap)["signed_in_only"] is True
    assert rules.apply(snap, ADA, "signed_in_only_off", now=2.0).signed_in_only is False
    assert slug(rules.apply, snap, rules.Actor("cy", "Cy"), "signed_in_only_off",
                now=2.0) == "not-host"
    ended = rules.end(snap, ADA, now=3.0)
    assert slug(rules.apply, ended, ADA, "signed_in_only_off", now=4.0) == "space-ended"
