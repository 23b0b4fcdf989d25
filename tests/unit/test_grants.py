"""The one authorization decision (townhall.grants), cell by cell, with no server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from townhall import grants
from townhall.auth import Identity, TokenIssuer
from townhall.problems import Forbidden, NotFound, Problem, Unauthorized
from townhall.room import rules
from townhall.room.snapshot import Person, Space

ISSUER = TokenIssuer(b"k" * 32)


def who(id_: str, role: str = "host", space: str | None = None, guest: bool = False,
        net: str | None = None) -> Identity:
    return Identity(id=id_, name=id_, space=space, role=role, expires=2**40, guest=guest,
                    net=net)


def space(**extra: Any) -> Space:
    snap = rules.create("s000000001", rules.Actor("ada", "Ada"), title="T", now=0.0)
    snap = rules.start(snap, rules.Actor("ada", "Ada"), now=1.0)
    for person in ("cy", "sam"):
        snap = rules.apply(snap, rules.Actor(person, person), "request", now=2.0)
        snap = rules.apply(snap, rules.Actor("ada", "Ada"), "approve", target=person, now=3.0)
    snap = rules.apply(snap, rules.Actor("ada", "Ada"), "add_cohost", target="cy", now=4.0)
    return replace(snap, **extra)


def refusal(ident: Identity | None, action: str, snap: Space | None
            ) -> tuple[int, str] | None:
    try:
        grants.authorize(ident, action, snap)
    except Problem as p:
        return p.status, p.instance_slug
    return None


def test_a_listener_role_token_with_the_hosts_identity_only_reads_listens_and_reacts() -> None:
    snap, fake_host = space(), who("ada", role="listener")
    for action in ("read", "listen", "react"):
        assert refusal(fake_host, action, snap) is None
    for action in ("request", "speak", "moderate", "host", "publish"):
        assert refusal(fake_host, action, snap) == (403, "insufficient-grant"), action
    assert refusal(who("ada"), "host", snap) is None
    assert refusal(who("ada", role="speaker"), "host", snap) == (403, "insufficient-grant")


def test_the_roster_decides_moderation_host_actions_and_publishing() -> None:
    snap = space()
    assert refusal(who("cy", role="speaker"), "moderate", snap) is None      # co-host
    assert refusal(who("cy", role="speaker"), "host", snap) == (403, "insufficient-grant")
    assert refusal(who("cy"), "host", snap) == (403, "not-host")
    assert refusal(who("sam"), "moderate", snap) == (403, "not-moderator")
    assert refusal(who("sam", role="speaker"), "publish", snap) is None
    assert refusal(who("zed"), "publish", snap) == (403, "not-on-stage")


def test_private_spaces_do_not_exist_for_strangers() -> None:
    snap = space(private=True)
    for stranger in (None, who("g-1", guest=True), who("zed", role="listener"),
                     who("ada", space="s000000009")):
        for action in grants.ACTIONS:
            if action != "create":
                assert refusal(stranger, action, snap) == (404, "space-not-found"), (
                    stranger, action)
    for insider in (who("ada"), who("sam"), who("bob", role="listener", space=snap.id)):
        assert refusal(insider, "listen", snap) is None
    assert grants.allows(who("bob", role="listener"), "listen", snap) is False
    allowed = rules.apply(snap, rules.Actor("ada", "Ada"), "allow", target="bob", now=5.0)
    assert grants.allows(who("bob", role="listener"), "listen", allowed)
    invited = rules.apply(snap, rules.Actor("ada", "Ada"), "invite", target="ivy", now=5.0)
    assert grants.allows(who("ivy", role="speaker"), "request", invited)


def test_a_token_bound_to_another_space_reads_and_listens_as_anyone_and_acts_nowhere() -> None:
    snap, bound = space(), who("bob", role="speaker", space="s000000009")
    assert refusal(bound, "read", snap) is None
    assert refusal(bound, "listen", snap) is None
    for action in ("react", "request", "speak", "moderate", "host", "publish", "unpublish"):
        assert refusal(bound, action, snap) == (403, "insufficient-grant"), action
    assert refusal(who("bob", role="speaker", space=snap.id), "react", snap) is None


def test_blocks_stick_to_the_identity_and_to_a_guests_network() -> None:
    snap = space()
    snap = rules.apply(snap, rules.Actor("g-troll", "T", net="n1"), "request", now=5.0)
    snap = rules.apply(snap, rules.Actor("ada", "Ada"), "remove", target="g-troll",
                       block=True, now=6.0)
    assert snap.blocked_nets == ["n1"]
    again = who("g-fresh", guest=True, net="n1")
    for action in ("listen", "react", "request", "publish"):
        assert refusal(again, action, snap) == (403, "blocked"), action
    assert refusal(again, "read", snap) is None                      # public: anyone reads
    # Signed-in people behind the same network are not guests: not blocked by it.
    assert refusal(who("carol", net="n1"), "react", snap) is None
    assert refusal(who("g-other", guest=True, net="n2"), "react", snap) is None
    with pytest.raises(Forbidden):
        rules.apply(snap, rules.Actor("g-fresh", "F", net="n1"), "request", now=7.0)
    # In a private Space a blocked identity is a stranger again, even with a token for it.
    private = replace(snap, private=True)
    assert refusal(who("g-troll", space=snap.id, guest=True), "read", private) == (
        404, "space-not-found")


def test_signed_in_only_keeps_anonymous_and_guest_audiences_out() -> None:
    snap = space(signed_in_only=True)
    assert refusal(None, "listen", snap) == (401, "token-missing")
    assert refusal(None, "read", snap) is None
    guest = who("g-1", guest=True)
    for action in ("listen", "react", "request"):
        assert refusal(guest, action, snap) == (403, "signed-in-only"), action
    assert refusal(who("carol", role="listener"), "listen", snap) is None
    # A guest who hosts it (or stands on its stage) is no audience.
    hosted = replace(snap, host=Person("g-1", "G"))
    assert refusal(guest, "listen", hosted) is None


def test_anonymous_callers_read_listen_and_react_only() -> None:
    snap = space()
    for action in ("read", "listen", "react"):
        assert refusal(None, action, snap) is None
    for action in ("request", "speak", "moderate", "host", "publish", "unpublish"):
        assert refusal(None, action, snap) == (401, "token-missing")


def test_create_needs_an_unbound_host_grant() -> None:
    assert refusal(None, "create", None) == (401, "token-missing")
    assert refusal(who("a", role="speaker"), "create", None) == (403, "insufficient-grant")
    assert refusal(who("a", space="s000000001"), "create", None) == (
        403, "insufficient-grant")
    assert refusal(who("g-1", guest=True), "create", None) is None


@pytest.mark.parametrize("action, target, want", [
    ("request", None, "request"), ("withdraw", None, "request"), ("accept", None, "request"),
    ("mute", None, "speak"), ("mute", "me", "speak"), ("mute", "sam", "moderate"),
    ("to_audience", None, "speak"), ("to_audience", "sam", "moderate"),
    ("unmute", None, "speak"), ("approve", "sam", "moderate"), ("remove", "x", "moderate"),
    ("allow", "x", "moderate"), ("add_cohost", "x", "host"), ("signed_in_only_on", None, "host"),
])
def test_each_stage_action_maps_to_one_grant(action: str, target: str | None,
                                             want: str) -> None:
    assert grants.for_rule(action, target, "me") == want
    assert action in rules.ACTIONS


def test_guest_tokens_carry_guest_and_a_keyed_network() -> None:
    net = ISSUER.net_tag("203.0.113.7")
    assert net is not None and "203" not in net
    assert ISSUER.net_tag("2001:db8:1:2:aaaa::1") == ISSUER.net_tag("2001:db8:1:2:ffff::9")
    assert ISSUER.net_tag("2001:db8:1:3::1") != ISSUER.net_tag("2001:db8:1:2::1")
    assert ISSUER.net_tag("::ffff:203.0.113.7") == net
    assert ISSUER.net_tag("127.0.0.1") is None and ISSUER.net_tag("::1") is None
    assert TokenIssuer(b"j" * 32).net_tag("203.0.113.7") != net
    ident = ISSUER.verify(ISSUER.mint("g-1", "G", guest=True, net=net))
    assert ident.guest and ident.net == net
    plain = ISSUER.verify(ISSUER.mint("ada", "Ada"))
    assert not plain.guest and plain.net is None


def test_refusals_are_the_shared_types() -> None:
    with pytest.raises(NotFound):
        grants.authorize(None, "listen", space(private=True))
    with pytest.raises(Unauthorized):
        grants.authorize(None, "request", space())
    with pytest.raises(ValueError):
        grants.authorize(None, "dance", space())
