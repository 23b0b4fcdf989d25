"""The rules of a Space, with no I/O: who may do what to the stage, and what it becomes.

Every function takes a ``Space`` (see ``townhall.room.snapshot``) and returns a new one,
or raises a refusal from ``townhall.problems`` with a stable slug. Time is passed in.
The store bumps ``version``; these rules never touch it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from townhall.auth import valid_identity
from townhall.problems import BadInput, Conflict, Forbidden, NotFound, Unprocessable
from townhall.room.snapshot import (
    ALLOW_LIMIT,
    BLOCKED_NETS_LIMIT,
    COHOST_LIMIT,
    INVITE_LIMIT,
    NETS_LIMIT,
    REQUEST_QUEUE_LIMIT,
    STAGE_LIMIT,
    Person,
    Space,
    Speaker,
    Waiting,
    clone,
    on_stage,
)
from townhall.room.text import check_text

Snapshot = Space
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SPACE_ID = re.compile(r"[a-z0-9]{10}")
RECORD_SPANS_LIMIT = 100


@dataclass(frozen=True)
class Actor:
    """The person acting: their identity and display name (and, for a guest, the keyed
    hash of the network their token was minted from: see townhall.auth)."""

    id: str
    name: str
    net: str | None = None


def new_space_id() -> str:
    """A fresh random Space id: 10 of [a-z0-9], safe as a NATS subject token and KV key."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(10))


def is_space_id(value: str) -> bool:
    """Whether ``value`` could name a Space (anything else is no Space at all)."""
    return SPACE_ID.fullmatch(value) is not None


def create(space_id: str, host: Actor, *, title: str, description: str = "",
           scheduled_start: str | None = None, private: bool = False,
           signed_in_only: bool = False, record: bool = False, now: float) -> Snapshot:
    """A new scheduled Space; its creator is the host and stands on its stage."""
    if not title.strip():
        raise Unprocessable("a Space needs a title", slug="title-required")
    check_text(title, "title")
    check_text(description, "description", multiline=True, allow_empty=True)
    return Space(id=space_id, title=title.strip(), description=description,
                 state="scheduled", version=1, private=private,
                 signed_in_only=signed_in_only, host=Person(host.id, host.name),
                 scheduled_start=scheduled_start, created_at=now,
                 stage=[Speaker(host.id, host.name, "host")], recording=record)


def role_of(snap: Snapshot, identity: str) -> str | None:
    """host, cohost, speaker, or None (in the audience)."""
    person = on_stage(snap, identity)
    return person.role if person else None


def is_moderator(snap: Snapshot, identity: str) -> bool:
    """The host or a co-host."""
    return role_of(snap, identity) in ("host", "cohost") or snap.host.id == identity


def is_blocked(snap: Snapshot, identity: str, net: str | None = None) -> bool:
    """Blocked by identity, or (``net``: a guest's) by the network a blocked guest used."""
    return identity in snap.blocked or (net is not None and net in snap.blocked_nets)


def start(snap: Snapshot, actor: Actor, *, now: float) -> Snapshot:
    """Go live (host only); a recorded Space opens its first recorded span."""
    _require_host(snap, actor)
    if snap.state != "scheduled":
        raise Conflict(f"the Space is {snap.state}, it cannot start",
                       slug="not-startable")
    out = clone(snap)
    out.state = "live"
    out.started_at = now
    if out.recording is True:
        _record(out, True, now)
    return out


def end(snap: Snapshot, actor: Actor, *, now: float) -> Snapshot:
    """End the Space for everyone (host only): the stage, requests and invitations empty."""
    _require_host(snap, actor)
    if snap.state == "ended":
        raise Conflict("the Space has already ended", slug="space-ended")
    out = clone(snap)
    out.state = "ended"
    out.ended_at = now
    _record(out, False, now)
    # Recorded at any time (true until the recorder has the file ready), or never: no replay.
    out.recording = bool(out.record_spans)
    out.stage = []
    out.requests = []
    out.invites = []
    return out


def _require_host(snap: Snapshot, actor: Actor) -> None:
    if snap.host.id != actor.id:
        raise Forbidden("only the host may do this", slug="not-host")


def _require_moderator(snap: Snapshot, actor: Actor) -> None:
    if not is_moderator(snap, actor.id):
        raise Forbidden("only the host or a co-host may do this", slug="not-moderator")


def _require_live(snap: Snapshot) -> None:
    if snap.state == "ended":
        raise Conflict("the Space has ended", slug="space-ended")
    if snap.state != "live":
        raise Conflict("the Space is not live yet", slug="not-live")


def _target(target: str | None) -> str:
    if not target:
        raise Unprocessable("this action needs an \"identity\"", slug="identity-required")
    if not valid_identity(target):
        raise Unprocessable("an identity is 1-64 of A-Z a-z 0-9 _ . : @ -",
                            slug="bad-identity")
    return target


def _remember_net(snap: Snapshot, actor: Actor) -> None:
    """Note a guest's network (internal) so that blocking them can block it too."""
    if actor.net is None:
        return
    nets = snap.nets
    nets.pop(actor.id, None)
    nets[actor.id] = actor.net
    while len(nets) > NETS_LIMIT:
        del nets[next(iter(nets))]


P = TypeVar("P", Speaker, Waiting)


def _drop(items: list[P], identity: str) -> list[P]:
    return [i for i in items if i.id != identity]


def _find(items: list[P], identity: str) -> P | None:
    return next((i for i in items if i.id == identity), None)


def _put_on_stage(snap: Snapshot, who: Actor) -> None:
    if on_stage(snap, who.id):
        return
    if len(snap.stage) >= STAGE_LIMIT:
        raise Conflict(f"the stage is full ({STAGE_LIMIT} people)", slug="stage-full")
    snap.stage.append(Speaker(who.id, who.name))
    snap.requests = _drop(snap.requests, who.id)
    snap.invites = _drop(snap.invites, who.id)


@dataclass(frozen=True)
class Call:
    """What an action was asked with, besides who asks: its target, the display name an
    invitation carries, whether a removal blocks, and the time."""

    target: str | None = None
    name: str | None = None
    block: bool = False
    now: float = 0.0

    def is_self(self, actor: Actor) -> bool:
        """Aimed at the actor themselves (no target, or their own identity)."""
        return self.target in (None, actor.id)

    def who(self, actor: Actor) -> str:
        """The person an action that defaults to oneself is aimed at."""
        return actor.id if self.target is None else self.target


# An action's rule: reads the snapshot as it was (``snap``), changes its copy (``out``)
# in place or raises a refusal.
Rule = Callable[[Snapshot, Snapshot, Actor, Call], None]


def apply(snap: Snapshot, actor: Actor, action: str, *, target: str | None = None,
          name: str | None = None, block: bool = False, now: float) -> Snapshot:
    """Apply one stage or moderation action; returns the new snapshot."""
    rule = RULES.get(action)
    if rule is None:
        raise BadInput(f"unknown action {action!r}", slug="unknown-action")
    if action in SETTINGS:
        if snap.state == "ended":
            raise Conflict("the Space has ended", slug="space-ended")
    else:
        _require_live(snap)
    out = clone(snap)
    rule(snap, out, actor, Call(target, name, block, now))
    return out


def _request(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    if is_blocked(snap, actor.id, actor.net):
        raise Forbidden("you are blocked from this Space", slug="blocked")
    if on_stage(snap, actor.id):
        raise Conflict("you are already on stage", slug="already-on-stage")
    if _find(snap.requests, actor.id):
        raise Conflict("you already asked to speak", slug="already-requested")
    if len(snap.requests) >= REQUEST_QUEUE_LIMIT:
        raise Conflict("too many people are waiting to speak; try again later",
                       slug="request-queue-full")
    out.requests.append(Waiting(actor.id, actor.name, call.now))
    _remember_net(out, actor)


def _withdraw(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    if not _find(snap.requests, actor.id):
        # Same type, same status as approving a request that is not there.
        raise NotFound("you have no request to withdraw", slug="no-request")
    out.requests = _drop(out.requests, actor.id)


def _asked(snap: Snapshot, actor: Actor, call: Call) -> tuple[str, Waiting]:
    """The target of approve/decline and their request, if a moderator asks."""
    _require_moderator(snap, actor)
    who = _target(call.target)
    request = _find(snap.requests, who)
    if request is None:
        raise NotFound(f"{who} has not asked to speak", slug="no-request")
    return who, request


def _approve(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    who, request = _asked(snap, actor, call)
    _put_on_stage(out, Actor(who, request.name))


def _decline(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    who, _ = _asked(snap, actor, call)
    out.requests = _drop(out.requests, who)


def _invite(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    _require_moderator(snap, actor)
    who = _target(call.target)
    if is_blocked(snap, who):
        raise Forbidden(f"{who} is blocked from this Space", slug="blocked")
    if on_stage(snap, who):
        raise Conflict(f"{who} is already on stage", slug="already-on-stage")
    request = _find(snap.requests, who)
    display = call.name or (request.name if request else who)
    check_text(display, "name")
    if not _find(snap.invites, who) and len(snap.invites) >= INVITE_LIMIT:
        raise Conflict(f"at most {INVITE_LIMIT} invitations may be open at once",
                       slug="invite-list-full")
    out.invites = _drop(out.invites, who)
    out.invites.append(Waiting(who, display[:64], call.now))


def _accept(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    if _find(snap.invites, actor.id) is None:
        raise Conflict("you have not been invited to speak", slug="no-invite")
    _put_on_stage(out, actor)
    _remember_net(out, actor)


def _to_audience(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    who = call.who(actor)
    role = role_of(snap, who)
    if role is None:
        raise Conflict(f"{who} is not on stage", slug="not-on-stage")
    if role == "host":
        raise Conflict("the host stays on stage; end the Space instead", slug="host-stays")
    if who != actor.id:
        _require_moderator(snap, actor)
        if role == "cohost" and role_of(snap, actor.id) != "host":
            raise Forbidden("only the host may move a co-host", slug="not-host")
    out.stage = _drop(out.stage, who)


def _speaker(out: Snapshot, who: str) -> Speaker:
    """``who`` as they stand on the copy's stage (to be changed in place)."""
    person = _find(out.stage, who)
    if person is None:
        raise Conflict(f"{who} is not on stage", slug="not-on-stage")
    return person


def _mute(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    who = call.who(actor)
    if not call.is_self(actor):
        _require_moderator(snap, actor)
        if role_of(snap, who) == "host":
            raise Forbidden("nobody mutes the host", slug="not-host")
    person = _speaker(out, who)
    person.muted = True
    person.muted_by = "self" if call.is_self(actor) else actor.id


def _unmute(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    if not call.is_self(actor):
        raise Forbidden("only speakers unmute themselves", slug="unmute-self-only")
    person = _speaker(out, actor.id)
    person.muted = False
    person.muted_by = None


def _add_cohost(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    _require_host(snap, actor)
    person = _speaker(out, _target(call.target))
    if person.role == "host":
        raise Conflict("the host is already the host", slug="already-host")
    cohosts = sum(1 for p in out.stage if p.role == "cohost")
    if person.role != "cohost" and cohosts >= COHOST_LIMIT:
        raise Conflict(f"a Space has at most {COHOST_LIMIT} co-hosts", slug="cohost-limit")
    person.role = "cohost"


def _remove_cohost(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    _require_host(snap, actor)
    who = _target(call.target)
    person = _speaker(out, who)
    if person.role != "cohost":
        raise Conflict(f"{who} is not a co-host", slug="not-cohost")
    person.role = "speaker"


def _remove(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    _require_moderator(snap, actor)
    who = _target(call.target)
    if who == snap.host.id:
        raise Forbidden("the host cannot be removed", slug="not-host")
    if role_of(snap, who) == "cohost" and role_of(snap, actor.id) != "host":
        raise Forbidden("only the host may remove a co-host", slug="not-host")
    out.stage = _drop(out.stage, who)
    out.requests = _drop(out.requests, who)
    out.invites = _drop(out.invites, who)
    if call.block:
        _block(out, who)


def _block(snap: Snapshot, who: str) -> None:
    """Block ``who`` and, if they came as a guest, the network their token names."""
    if who not in snap.blocked:
        snap.blocked.append(who)
    snap.allowed = [i for i in snap.allowed if i != who]
    net = snap.nets.get(who)
    nets = snap.blocked_nets
    if net is not None and net not in nets:
        nets.append(net)
        del nets[:-BLOCKED_NETS_LIMIT]  # the oldest go first; identities stay blocked


def _record(snap: Snapshot, on: bool, now: float) -> None:
    """Open or close a span of recorded time (``_record_spans``: [[from, to|None], ...]);
    the recorder keeps the chunks stamped inside a span."""
    spans = snap.record_spans
    is_open = bool(spans) and spans[-1][1] is None
    if on and not is_open:
        if len(spans) >= RECORD_SPANS_LIMIT:
            raise Conflict("recording was switched on and off too often",
                           slug="record-toggles")
        spans.append([now, None])
    elif not on and is_open:
        spans[-1][1] = now


def _recording(on: bool) -> Rule:
    """record_on / record_off (host only): a live Space opens or closes a recorded span."""

    def rule(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
        _require_host(snap, actor)
        out.recording = on
        if snap.state == "live":
            _record(out, on, call.now)

    return rule


def _signed_in_only(on: bool) -> Rule:
    """Who may listen: anyone, or only those with a token (host only)."""

    def rule(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
        _require_host(snap, actor)
        out.signed_in_only = on

    return rule


def _allow(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    """Let someone into a private Space (moderators)."""
    _require_moderator(snap, actor)
    who = _target(call.target)
    if is_blocked(snap, who):
        raise Forbidden(f"{who} is blocked from this Space", slug="blocked")
    allowed = [i for i in out.allowed if i != who]
    if len(allowed) >= ALLOW_LIMIT:
        raise Conflict(f"at most {ALLOW_LIMIT} identities may be let in",
                       slug="allow-list-full")
    out.allowed = [*allowed, who]


def _disallow(snap: Snapshot, out: Snapshot, actor: Actor, call: Call) -> None:
    """Take someone off a private Space's list (moderators)."""
    _require_moderator(snap, actor)
    who = _target(call.target)
    out.allowed = [i for i in out.allowed if i != who]


# Every action a client may ask for, and its rule. Stage actions need a live Space.
RULES: dict[str, Rule] = {
    "request": _request, "withdraw": _withdraw, "approve": _approve, "decline": _decline,
    "invite": _invite, "accept": _accept, "to_audience": _to_audience, "mute": _mute,
    "unmute": _unmute, "add_cohost": _add_cohost, "remove_cohost": _remove_cohost,
    "remove": _remove,
    # Settings and who may come in: also while the Space is scheduled.
    "allow": _allow, "disallow": _disallow,
    "signed_in_only_on": _signed_in_only(True), "signed_in_only_off": _signed_in_only(False),
    "record_on": _recording(True), "record_off": _recording(False),
}
ACTIONS = tuple(RULES)
SETTINGS = ("allow", "disallow", "signed_in_only_on", "signed_in_only_off", "record_on",
            "record_off")
