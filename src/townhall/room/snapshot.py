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
import types
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

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


def _meta(doc: str = "", *, internal: bool = False, omit: str | None = None,
          **schema: Any) -> dict[str, Any]:
    """A field's metadata: its description and JSON-schema constraints (api/schemas.py),
    whether it is internal (stored as ``_<name>``, never public), and when it is left out
    of the JSON (``omit``: "none" or "empty"), so documents keep the shape they had."""
    return {"doc": doc, "internal": internal, "omit": omit, "schema": schema}


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
    muted_by: str | None = field(default=None, metadata=_meta(
        'null, "self", or who muted them'))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Waiting:
    """A request to speak, or an invitation to, and when it was made."""

    id: str
    name: str
    at: float = field(metadata=_meta("unix seconds"))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    """A finished recording (townhall.recording)."""

    state: str = field(default="ready", metadata=_meta(
        '"ready" (webhooks: recording.ready); "expired" once the sweep deleted its files '
        "after --recording-days"))
    url: str = field(default="", metadata=_meta("the replay file, /replay/<id>.opus"))
    duration: float = field(default=0.0, metadata=_meta("seconds of audio"))
    bytes: int = 0
    m4a: str | None = field(default=None, metadata=_meta(
        "the same audio as Opus in MP4, /replay/<id>.m4a", omit="none"))
    m4a_bytes: int | None = field(default=None, metadata=_meta(omit="none"))
    ready_at: float = 0.0
    expires_at: float = field(default=0.0, metadata=_meta(
        "after this (unix seconds) it answers 410"))
    expired_at: float | None = field(default=None, metadata=_meta(
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


@dataclass
class Space:
    """One Space's document, as stored; see the module docstring for its JSON."""

    id: str = field(metadata=_meta(pattern="^[a-z0-9]{10}$"))
    title: str
    description: str
    state: State
    version: int = field(metadata=_meta("+1 on every visible change", ge=1))
    private: bool
    host: Person
    created_at: float
    signed_in_only: bool = field(default=False, metadata=_meta(
        "no anonymous or guest listeners"))
    scheduled_start: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    stage: list[Speaker] = field(default_factory=list)
    requests: list[Waiting] = field(default_factory=list)
    invites: list[Waiting] = field(default_factory=list)
    listeners: int = field(default=0, metadata=_meta("summed from the edges' reports",
                                                     ge=0))
    reactions: dict[str, int] = field(default_factory=dict, metadata=_meta(
        "running totals per emoji"))
    recording: bool | Recording = field(default=False, metadata=_meta(
        "true while recorded (or until the recording is ready after the end); the "
        "finished recording's details once it is ready; false if none"))
    record_spans: list[list[float | None]] = field(default_factory=list,
                                                   metadata=_meta(internal=True))
    blocked: list[str] = field(default_factory=list, metadata=_meta(internal=True))
    edges: dict[str, EdgeSeen] = field(default_factory=dict, metadata=_meta(internal=True))
    allowed: list[str] = field(default_factory=list, metadata=_meta(internal=True))
    blocked_nets: list[str] = field(default_factory=list, metadata=_meta(internal=True))
    nets: dict[str, str] = field(default_factory=dict, metadata=_meta(internal=True))
    clips: list[str] = field(default_factory=list,
                             metadata=_meta(internal=True, omit="empty"))
    recording_deleted: float | None = field(default=None,
                                            metadata=_meta(internal=True, omit="none"))
    extra: dict[str, Any] = field(default_factory=dict)

    def speaker(self, identity: str) -> Speaker | None:
        """The stage entry of ``identity``, if they are on stage."""
        return next((p for p in self.stage if p.id == identity), None)

    @property
    def finished(self) -> Recording | None:
        """The finished recording (ready or expired), if there is one."""
        return self.recording if isinstance(self.recording, Recording) else None


# The order of keys in the stored JSON, as documents have always been written.
_ORDER = ("id", "title", "description", "state", "version", "private", "signed_in_only",
          "host", "scheduled_start", "created_at", "started_at", "ended_at", "stage",
          "requests", "invites", "listeners", "reactions", "recording", "record_spans",
          "blocked", "edges", "allowed", "blocked_nets", "nets", "clips",
          "recording_deleted")


def on_stage(space: Space, identity: str) -> Speaker | None:
    """The stage entry of ``identity``, if they are on stage."""
    return space.speaker(identity)


# --- the one serializer ------------------------------------------------------------------

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
    return _build(Space, doc, "snapshot")


def to_doc(space: Space) -> dict[str, Any]:
    """The ``Space`` as the JSON object the bucket stores (internal keys included)."""
    out: dict[str, Any] = _plain(space)
    return out


def public_view(space: Space) -> dict[str, Any]:
    """The snapshot as clients may see it: internal ``_`` keys removed."""
    return {k: v for k, v in to_doc(space).items() if not k.startswith("_")}


def json_key(f: Any) -> str:
    """A dataclass field's key in the JSON."""
    return f"_{f.name}" if f.metadata.get("internal") else str(f.name)


T = TypeVar("T")


_SHAPES: dict[Any, tuple[dict[str, Any], tuple[Any, ...]]] = {}


def json_fields(cls: type) -> list[tuple[Field[Any], Any]]:
    """A snapshot dataclass's fields (``extra`` aside) in the order the JSON has them,
    each with its resolved type: what the codec and the OpenAPI schema both walk."""
    hints, order = _shape(cls)
    return [(f, hints[f.name]) for f in order]


def _shape(cls: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A dataclass's resolved annotations and its fields in JSON order (``extra`` aside),
    worked out once per class."""
    shape = _SHAPES.get(cls)
    if shape is None:
        found = {f.name: f for f in fields(cls)}
        order = [n for n in _ORDER if n in found] if cls is Space else list(found)
        shape = _SHAPES[cls] = (get_type_hints(cls),
                                tuple(found[n] for n in order if n != "extra"))
    return shape


def _build(cls: type[T], doc: Any, path: str) -> T:
    if not isinstance(doc, dict):
        raise SnapshotError(f"{path} is not an object")
    hints, shape = _shape(cls)
    values: dict[str, Any] = {}
    known = set()
    for f in shape:
        key = json_key(f)
        known.add(key)
        if key not in doc:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SnapshotError(f"{path} needs {key!r}")
            continue
        values[f.name] = _value(hints[f.name], doc[key], f"{path}.{key}")
    values["extra"] = {k: v for k, v in doc.items() if k not in known}
    return cls(**values)


def _value(hint: Any, value: Any, path: str) -> Any:  # noqa: C901 - one case per JSON type
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for arg in get_args(hint):
            try:
                return _value(arg, value, path)
            except SnapshotError:
                continue
        raise SnapshotError(f"{path} is not {hint}")
    if is_dataclass(hint):
        return _build(hint, value, path)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(hint):
            raise SnapshotError(f"{path} is not one of {get_args(hint)}")
        return value
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise SnapshotError(f"{path} is not a list")
        return [_value(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = get_args(hint)
        if not isinstance(value, dict):
            raise SnapshotError(f"{path} is not an object")
        return {str(k): _value(item, v, f"{path}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise SnapshotError(f"{path} is not null")
        return None
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return value  # JSON writes 2.0 as 2: kept as written, so it is written back alike
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise SnapshotError(f"{path} is not {getattr(hint, '__name__', hint)}")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in _shape(type(value))[1]:
            item = getattr(value, f.name)
            omit = f.metadata.get("omit")
            if (omit == "none" and item is None) or (omit == "empty" and not item):
                continue
            out[json_key(f)] = _plain(item)
        out.update(getattr(value, "extra", {}))
        return out
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
