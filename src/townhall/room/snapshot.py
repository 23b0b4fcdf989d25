"""The Space snapshot: the contract every role and client reads, typed once.

The api stores one JSON document per Space in the ``spaces`` key-value bucket. ``Space``
and the dataclasses beside it are that document; ``decode``/``encode`` (and
``from_doc``/``to_doc``) are the only code that turns it into JSON and back, and
``public_view`` the only code that derives what ``GET /api/v1/spaces/<id>``,
``townhall.<id>.state`` and ``/ws`` carry from it. api/schemas.py generates the OpenAPI
schema from these same dataclasses. The JSON, public part first::

    {
      "id": "k3v9x2m4qa",                 # [a-z0-9]{10}; also a NATS subject token
      "title": "...", "description": "...",
      "state": "scheduled" | "live" | "ended",
      "version": 7,                       # +1 on every change, never reused
      "private": false,                   # only its people and tokens for it see it
      "signed_in_only": false,            # no anonymous or guest listeners
      "host": {"id": "ada", "name": "Ada"},
      "scheduled_start": "2026-11-25T20:00:00Z" | null,
      "created_at": ..., "started_at": ... | null, "ended_at": ... | null,   # unix seconds
      "stage": [{"id": "ada", "name": "Ada", "role": "host" | "cohost" | "speaker",
                 "muted": false, "muted_by": null | "self" | "<identity>"}],
      "requests": [{"id": "bob", "name": "Bob", "at": 1795576043.1}],
      "invites": [{"id": "cy", "name": "Cy", "at": ...}],
      "listeners": 0,                     # summed from the edges' reports, never a list
      "reactions": {"👏": 12, ...},        # running totals, summed per interval
      "recording": false | true | {"state": "ready", "url": "/replay/<id>.opus",
                   "duration": 3600.2,
                   "bytes": ..., "m4a": "/replay/<id>.m4a", "m4a_bytes": ...,
                   "ready_at": ..., "expires_at": ...}
    }

``recording`` is true while the Space is recorded and, after the end, until the recording
is ready; then the object with ``state: "ready"`` (the webhook ``recording.ready``), and
``state: "expired"`` (plus ``expired_at``) once the sweep deleted its files.

Keys starting with ``_`` are internal: they stay in the bucket and never leave the api
and the edges. ``public_view`` strips them. ``_blocked`` (identities), ``_blocked_nets``
and ``_nets`` (keyed hashes of guests' networks: see townhall.auth), ``_allowed``
(identities let into a private Space), ``_edges`` (edge reports), ``_record_spans``
(``[[from, to|null], ...]``: when recording was on, unix seconds), ``_clips`` (clip ids)
and ``_recording_deleted`` (when the host deleted the recording). In the dataclasses they
are the same names without the ``_``.

Keys this version does not know (written by a newer one during a rolling restart) are
kept in ``extra`` and written back unchanged, so an older api never drops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from townhall.room.jsonshape import ShapeError, copier, json_fields, meta, reader, writer

STAGE_LIMIT = 13        # host + co-hosts + speakers
COHOST_LIMIT = 2
REQUEST_QUEUE_LIMIT = 100
INVITE_LIMIT = 50
ALLOW_LIMIT = 500
BLOCKED_NETS_LIMIT = 500
NETS_LIMIT = 200            # guests' networks remembered (requesters, speakers)
REACTIONS: tuple[str, ...] = ("👏", "❤️", "😂", "🔥", "💯", "🙌", "😮", "👍")
SNAPSHOTS_PER_SECOND = 4

State = Literal["scheduled", "live", "ended"]
Role = Literal["host", "cohost", "speaker"]


class SnapshotError(ValueError):
    """A document that is not a Space snapshot."""


@dataclass
class Person:
    """Someone named in a snapshot: the host."""

    id: str
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Speaker:
    """Someone on stage."""

    id: str
    name: str
    role: Role = "speaker"
    muted: bool = False
    muted_by: str | None = field(default=None, metadata=meta(
        'null, "self", or who muted them'))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Waiting:
    """A request to speak, or an invitation to, and when it was made."""

    id: str
    name: str
    at: float = field(metadata=meta("unix seconds"))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    """A finished recording (townhall.recording)."""

    state: str = field(default="ready", metadata=meta(
        '"ready" (webhooks: recording.ready); "expired" once the sweep deleted its files '
        "after --recording-days"))
    url: str = field(default="", metadata=meta("the replay file, /replay/<id>.opus"))
    duration: float = field(default=0.0, metadata=meta("seconds of audio"))
    bytes: int = 0
    m4a: str | None = field(default=None, metadata=meta(
        "the same audio as Opus in MP4, /replay/<id>.m4a", omit="none"))
    m4a_bytes: int | None = field(default=None, metadata=meta(omit="none"))
    ready_at: float = 0.0
    expires_at: float = field(default=0.0, metadata=meta(
        "after this (unix seconds) it answers 410"))
    expired_at: float | None = field(default=None, metadata=meta(
        "when the sweep deleted its files", omit="none"))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EdgeSeen:
    """An edge's latest report about one Space (internal: ``_edges``)."""

    listeners: int = 0
    url: str | None = None
    capacity: int | None = None
    at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Space:
    """One Space's document, as stored; see the module docstring for its JSON. Its fields
    are in the order of the JSON's keys."""

    id: str = field(metadata=meta(pattern="^[a-z0-9]{10}$"))
    title: str
    description: str
    state: State
    version: int = field(metadata=meta("+1 on every visible change", ge=1))
    private: bool
    signed_in_only: bool = field(default=False, metadata=meta(
        "no anonymous or guest listeners"))
    host: Person
    scheduled_start: str | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    stage: list[Speaker] = field(default_factory=list)
    requests: list[Waiting] = field(default_factory=list)
    invites: list[Waiting] = field(default_factory=list)
    listeners: int = field(default=0, metadata=meta("summed from the edges' reports", ge=0))
    reactions: dict[str, int] = field(default_factory=dict, metadata=meta(
        "running totals per emoji"))
    recording: bool | Recording = field(default=False, metadata=meta(
        "true while recorded (or until the recording is ready after the end); the "
        "finished recording's details once it is ready; false if none"))
    record_spans: list[list[float | None]] = field(default_factory=list,
                                                   metadata=meta(internal=True))
    blocked: list[str] = field(default_factory=list, metadata=meta(internal=True))
    edges: dict[str, EdgeSeen] = field(default_factory=dict, metadata=meta(internal=True))
    allowed: list[str] = field(default_factory=list, metadata=meta(internal=True))
    blocked_nets: list[str] = field(default_factory=list, metadata=meta(internal=True))
    nets: dict[str, str] = field(default_factory=dict, metadata=meta(internal=True))
    clips: list[str] = field(default_factory=list, metadata=meta(internal=True, omit="empty"))
    recording_deleted: float | None = field(default=None,
                                            metadata=meta(internal=True, omit="none"))
    extra: dict[str, Any] = field(default_factory=dict)

    def speaker(self, identity: str) -> Speaker | None:
        """The stage entry of ``identity``, if they are on stage."""
        return next((p for p in self.stage if p.id == identity), None)

    @property
    def finished(self) -> Recording | None:
        """The finished recording (ready or expired), if there is one."""
        return self.recording if isinstance(self.recording, Recording) else None


def on_stage(space: Space, identity: str) -> Speaker | None:
    """The stage entry of ``identity``, if they are on stage."""
    return space.speaker(identity)


# --- the one serializer (townhall.room.jsonshape does the walking) ----------------------

def decode(data: bytes | str) -> Space:
    """A stored (or published) document as a ``Space``; SnapshotError if it is not one."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SnapshotError(f"not JSON: {exc}") from exc
    return from_doc(doc)


def encode(space: Space) -> bytes:
    """The ``Space`` as the JSON bytes the bucket stores."""
    return json.dumps(to_doc(space), separators=(",", ":"), ensure_ascii=False).encode()


def from_doc(doc: Any) -> Space:
    """A parsed JSON document as a ``Space``; SnapshotError if it is not one."""
    try:
        space: Space = _READ(doc)
    except ShapeError as exc:
        raise SnapshotError(f"not a Space snapshot: {exc}") from exc
    return space


def to_doc(space: Space) -> dict[str, Any]:
    """The ``Space`` as the JSON object the bucket stores (internal keys included); it
    shares nothing with ``space``."""
    doc: dict[str, Any] = _WRITE(space)
    return doc


def clone(space: Space) -> Space:
    """A copy of ``space`` that shares nothing with it (what a rule changes)."""
    copied: Space = _COPY(space)
    return copied


def public_view(space: Space) -> dict[str, Any]:
    """The snapshot as clients may see it: internal ``_`` keys removed."""
    return {k: v for k, v in to_doc(space).items() if not k.startswith("_")}


def same_public(a: Space, b: Space) -> bool:
    """Whether ``a`` and ``b`` look the same to clients (their public views are equal),
    without building either view."""
    return all(getattr(a, name) == getattr(b, name) for name in _PUBLIC) \
        and _public_extra(a) == _public_extra(b)


def _public_extra(space: Space) -> dict[str, Any]:
    return {k: v for k, v in space.extra.items() if not k.startswith("_")}


_READ, _WRITE, _COPY = reader(Space), writer(Space), copier(Space)
_PUBLIC = [f.name for f, _ in json_fields(Space) if not f.metadata.get("internal")]
