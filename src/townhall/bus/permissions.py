"""Who may publish and subscribe to what on townhall's NATS, per role: the authorization
block of the embedded nats-server's config, and a template for operators' own.

Plain data, no I/O. Subjects follow docs/architecture.md; JetStream is reached through
its API subjects (``$JS.API.>``), key-value writes are publishes to ``$KV.<bucket>.<key>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from townhall.bus import subjects

ROLES = ("api", "stage", "edge")
ADMIN = "admin"  # operators' tools and tests: everything

# What a role that only reads JetStream needs: look streams up, read KV entries and the
# last chunk, replay MEDIA through an ephemeral pull consumer, follow a bucket with an
# ordered consumer (flow-control replies go to $JS.FC). CREATE of MEDIA/STATS is allowed
# because every process runs `ensure_topology`, which is a no-op on an identical stream;
# UPDATE is not (a changed stream config could source other subjects into a bucket).
_JS_READ = (
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.INFO.*",
    f"$JS.API.STREAM.CREATE.{subjects.MEDIA_STREAM}",
    f"$JS.API.STREAM.CREATE.{subjects.STATS_STREAM}",
    f"$JS.API.STREAM.CREATE.{subjects.WEBHOOKS_STREAM}",
    f"$JS.API.STREAM.CREATE.{subjects.AAC_STREAM}",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.FC.>",
)
# Every role reads the room (state, control, KV entries) and gets replies on its inbox.
_SUBSCRIBE = ("townhall.>", "$KV.>", "_INBOX.>")


@dataclass(frozen=True)
class Permissions:
    """Subjects one NATS user may publish to and subscribe to (allow lists only, so that
    the permissions of a process running several roles are simply the union)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False

    def __or__(self, other: Permissions) -> Permissions:
        return Permissions(publish=_merge(self.publish, other.publish),
                           subscribe=_merge(self.subscribe, other.subscribe),
                           allow_responses=self.allow_responses or other.allow_responses)

    def to_config(self) -> dict[str, Any]:
        """The ``permissions`` map of one entry of nats-server's ``authorization.users``."""
        out: dict[str, Any] = {"publish": {"allow": list(self.publish)},
                               "subscribe": {"allow": list(self.subscribe)}}
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def _merge(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


ROLE_PERMISSIONS: dict[str, Permissions] = {
    # The control plane: owns the topology and the buckets (with all of $JS.API it could
    # rewrite any of them anyway); never speaks for the stage. It derives webhook events,
    # records Spaces (objects of the recordings store are publishes to $O.<bucket>),
    # encodes their AAC rendition for HLS while some api says it is wanted, and keeps
    # stream leaders on the preferred nodes ($JS.API.STREAM.LEADER.STEPDOWN.<stream>, and
    # the key "leaders" in the recorders bucket: townhall.api.leaders).
    "api": Permissions(
        publish=("townhall.*.state", "townhall.*.control", subjects.whip("*"),
                 subjects.hooks("*"), subjects.aac("*"), subjects.aac_wanted("*"),
                 "$KV.>", f"$O.{subjects.RECORDINGS_BUCKET}.>", "$JS.API.>", "$JS.ACK.>",
                 "$JS.FC.>"),
        subscribe=_SUBSCRIBE),
    # The media origin: chunks, levels, its heartbeat, its leases, and WHIP answers (only
    # to requests it received: allow_responses). It never writes a Space.
    "stage": Permissions(
        publish=(subjects.media("*"), subjects.levels("*"), subjects.STAGES,
                 f"$KV.{subjects.LEASES_BUCKET}.>", *_JS_READ),
        subscribe=_SUBSCRIBE, allow_responses=True),
    # Listener fan-out: only its reports and heartbeats; never media, never a Space.
    "edge": Permissions(
        publish=(subjects.stats("*", "*"), subjects.EDGES, *_JS_READ),
        subscribe=_SUBSCRIBE),
}
ADMIN_PERMISSIONS = Permissions(publish=(">",), subscribe=(">",))


def user_for(roles: Iterable[str]) -> str:
    """The NATS user a process running ``roles`` connects as, e.g. ``api+edge``."""
    wanted = set(roles)
    unknown = wanted - set(ROLES)
    if unknown or not wanted:
        raise ValueError(f"no NATS user for roles {sorted(wanted)}")
    return "+".join(r for r in ROLES if r in wanted)


def user_names() -> list[str]:
    """Every user of the embedded server: ``admin`` and one per non-empty set of roles."""
    names = [ADMIN]
    for size in range(1, len(ROLES) + 1):
        names += ["+".join(combo) for combo in combinations(ROLES, size)]
    return names


def permissions_of(user: str) -> Permissions:
    """What ``user`` (a name from ``user_names``) may do."""
    if user == ADMIN:
        return ADMIN_PERMISSIONS
    perms: Permissions | None = None
    for role in user.split("+"):
        if role not in ROLE_PERMISSIONS:
            raise ValueError(f"unknown NATS user {user!r}")
        perms = ROLE_PERMISSIONS[role] if perms is None else perms | ROLE_PERMISSIONS[role]
    assert perms is not None
    return perms


def authorization(passwords: Mapping[str, str]) -> dict[str, Any]:
    """nats-server's ``authorization`` block: each user with its password and permissions."""
    return {"users": [{"user": name, "password": password,
                       "permissions": permissions_of(name).to_config()}
                      for name, password in sorted(passwords.items())]}
