"""Who may do what to a Space: the one decision every route asks (HTTP, WHIP, WebSocket,
Ogg). No I/O: a verified token identity (or None), an action and the Space's document.

Three things must agree before anything happens:

- the token: its role caps what its holder may do (listener < speaker < host) and a token
  bound to one Space (``space`` claim) acts there only;
- the Space: a private Space admits only its people (host, stage, invitees, identities the
  moderators allowed) and tokens granted for it; to everyone else it does not exist (404,
  so existence does not leak); a "signed-in only" Space admits no anonymous or guest
  listener; blocked identities (and, for guests, their network) stay out;
- the roster: moderation needs the host or a co-host, host actions the host, publishing a
  place on stage.

The grant matrix in docs/api.md is this function's table; tests/security drives a live
server with it.
"""

from __future__ import annotations

from townhall.auth import Identity, role_rank
from townhall.problems import Forbidden, NotFound, Unauthorized
from townhall.room.snapshot import Space, on_stage

Snapshot = Space

# The least token role each action needs.
NEEDS: dict[str, str] = {
    "read": "listener",       # the snapshot, where to listen
    "listen": "listener",     # /ws, /listen/<id>.opus
    "react": "listener",      # POST reactions, "react" on /ws
    "request": "speaker",     # request / withdraw / accept an invitation
    "speak": "speaker",       # one's own place on stage: mute, unmute, leave
    "moderate": "speaker",    # approve, decline, invite, mute/move/remove others, allow
    "host": "host",           # start, end, co-hosts, the Space's settings
    "publish": "speaker",     # WHIP POST
    "unpublish": "listener",  # WHIP DELETE (one's own session)
    "create": "host",         # POST /spaces
    "clip": "speaker",        # POST clips: on stage while live, the host after the end
}
ACTIONS = tuple(NEEDS)
# What needs no token at all (on a public Space that is not signed-in only).
ANONYMOUS = frozenset({"read", "listen", "react"})
# What a token bound to another Space may still do here: what anyone may.
FOREIGN = frozenset({"read", "listen"})
# What "signed-in listeners only" keeps from anonymous and guest callers in the audience.
AUDIENCE = frozenset({"listen", "react", "request"})

# Which grant each stage action of townhall.room.rules needs.
_BY_RULE = {
    "request": "request", "withdraw": "request", "accept": "request",
    "unmute": "speak",
    "approve": "moderate", "decline": "moderate", "invite": "moderate", "remove": "moderate",
    "allow": "moderate", "disallow": "moderate",
    "add_cohost": "host", "remove_cohost": "host",
    "signed_in_only_on": "host", "signed_in_only_off": "host",
    "record_on": "host", "record_off": "host",
}


def for_rule(action: str, target: str | None, actor: str) -> str:
    """The grant a stage action of ``actor`` (about ``target``) needs."""
    if action in ("to_audience", "mute"):
        return "speak" if target in (None, actor) else "moderate"
    return _BY_RULE.get(action, "moderate")


def here(ident: Identity | None, snap: Snapshot) -> Identity | None:
    """The identity as far as this Space goes: a token bound to another Space is none."""
    if ident is None or ident.space not in (None, snap.id):
        return None
    return ident


def member(snap: Snapshot, identity: str) -> bool:
    """The host, someone on stage, an invitee, or someone the moderators allowed in."""
    return (snap.host.id == identity or on_stage(snap, identity) is not None
            or any(i.id == identity for i in snap.invites) or identity in snap.allowed)


def blocked(snap: Snapshot, ident: Identity) -> bool:
    """Blocked by identity, or a guest from a network a blocked guest came from."""
    if ident.id in snap.blocked:
        return True
    return ident.guest and ident.net is not None and ident.net in snap.blocked_nets


def admitted(snap: Snapshot, grant: Identity | None) -> bool:
    """Whether the Space exists for this caller at all."""
    if grant is not None and blocked(snap, grant) and snap.private:
        return False
    if not snap.private:
        return True
    if grant is None:
        return False
    return grant.space == snap.id or member(snap, grant.id)


def authorize(ident: Identity | None, action: str, snap: Snapshot | None) -> None:
    """Return if ``ident`` may do ``action`` to the Space ``snap`` (None: ``create``);
    otherwise raise the typed refusal every route answers alike."""
    if action not in NEEDS:
        raise ValueError(f"unknown grant action {action!r}")
    if snap is None:
        _create(ident)
        return
    grant = here(ident, snap)
    if not admitted(snap, grant):
        raise NotFound(f"no Space {snap.id}", slug="space-not-found")
    if action == "read":
        return
    if grant is not None and blocked(snap, grant):
        raise Forbidden("you are blocked from this Space", slug="blocked")
    if (snap.signed_in_only and action in AUDIENCE
            and (grant is None or grant.guest) and not (grant and member(snap, grant.id))):
        _signed_in_only(ident, grant)
    if grant is None:
        if action in (ANONYMOUS if ident is None else FOREIGN):
            return
        if ident is None:
            raise Unauthorized("an Authorization: Bearer token is required",
                               slug="token-missing")
        raise Forbidden("this token is for another Space", slug="insufficient-grant")
    if role_rank(grant.role) < role_rank(NEEDS[action]):
        raise Forbidden(f"this token's {grant.role} grant does not allow this; it needs "
                        f"{NEEDS[action]}", slug="insufficient-grant")
    _roster(snap, grant, action)


def allows(ident: Identity | None, action: str, snap: Snapshot | None) -> bool:
    """``authorize`` as a yes/no."""
    try:
        authorize(ident, action, snap)
    except (NotFound, Forbidden, Unauthorized):
        return False
    return True


def _create(ident: Identity | None) -> None:
    if ident is None:
        raise Unauthorized("an Authorization: Bearer token is required", slug="token-missing")
    if ident.space is not None:
        raise Forbidden("this token is limited to one Space", slug="insufficient-grant")
    if role_rank(ident.role) < role_rank(NEEDS["create"]):
        raise Forbidden("creating a Space needs a host grant", slug="insufficient-grant")


def _signed_in_only(ident: Identity | None, grant: Identity | None) -> None:
    if ident is None:
        raise Unauthorized("this Space admits signed-in listeners only",
                           slug="token-missing")
    if grant is None:
        raise Forbidden("this token is for another Space", slug="insufficient-grant")
    raise Forbidden("this Space admits signed-in listeners only, not guests",
                    slug="signed-in-only")


def _roster(snap: Snapshot, grant: Identity, action: str) -> None:
    person = on_stage(snap, grant.id)
    is_host = snap.host.id == grant.id
    if action == "moderate" and not (is_host or (person and person.role == "cohost")):
        raise Forbidden("only the host or a co-host may do this", slug="not-moderator")
    if action == "host" and not is_host:
        raise Forbidden("only the host may do this", slug="not-host")
    if action == "clip" and not (is_host or person):
        raise Forbidden("only the host and people on stage may clip", slug="not-on-stage")
    if action == "publish" and person is None:
        raise Forbidden("only people on this Space's stage may publish", slug="not-on-stage")
