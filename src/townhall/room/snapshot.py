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

import copy
import json
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

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
# Each dataclass and type gets its reader and writer worked out once (the first time it is
# used), so that reading a document is one pass of plain checks, not reflection per value.

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
    space: Space = _reader(Space)(doc)
    return space


def to_doc(space: Space) -> dict[str, Any]:
    """The ``Space`` as the JSON object the bucket stores (internal keys included); it
    shares nothing with ``space``."""
    doc: dict[str, Any] = _writer(Space)(space)
    return doc


def clone(space: Space) -> Space:
    """A copy of ``space`` that shares nothing with it (what a rule changes)."""
    copied: Space = _copier(Space)(space)
    return copied


def public_view(space: Space) -> dict[str, Any]:
    """The snapshot as clients may see it: internal ``_`` keys removed."""
    return {k: v for k, v in to_doc(space).items() if not k.startswith("_")}


def same_public(a: Space, b: Space) -> bool:
    """Whether ``a`` and ``b`` look the same to clients (their public views are equal)."""
    return all(getattr(a, name) == getattr(b, name) for name in _public_names()) \
        and _public_extra(a) == _public_extra(b)


def _public_names() -> list[str]:
    return [f.name for f, _ in json_fields(Space) if not f.metadata.get("internal")]


def _public_extra(space: Space) -> dict[str, Any]:
    return {k: v for k, v in space.extra.items() if not k.startswith("_")}


def json_key(f: Field[Any]) -> str:
    """A dataclass field's key in the JSON."""
    return f"_{f.name}" if f.metadata.get("internal") else f.name


def json_fields(cls: type) -> list[tuple[Field[Any], Any]]:
    """A snapshot dataclass's fields (``extra`` aside) in the order the JSON has them,
    each with its resolved type: what the codec and the OpenAPI schema both walk."""
    known = _FIELDS.get(cls)
    if known is None:
        found = {f.name: f for f in fields(cls)}
        order = [n for n in _ORDER if n in found] if cls is Space else list(found)
        hints = get_type_hints(cls)
        known = _FIELDS[cls] = [(found[n], hints[n]) for n in order if n != "extra"]
    return known


_FIELDS: dict[type, list[tuple[Field[Any], Any]]] = {}


Convert = Callable[[Any], Any]
_READERS: dict[Any, Convert] = {}
_WRITERS: dict[Any, Convert] = {}
_COPIERS: dict[Any, Convert] = {}
_SCALARS = {str: (str,), bool: (bool,), int: (int,), float: (int, float)}  # JSON 2.0 is 2


def _reader(hint: Any) -> Convert:
    """The function that checks a parsed JSON value against ``hint`` and builds it."""
    reader = _READERS.get(hint)
    if reader is None:
        reader = _READERS[hint] = _make_reader(hint)
    return reader


def _make_reader(hint: Any) -> Convert:  # noqa: C901 - one case per kind of type
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        return _dataclass_reader(hint)
    if origin in (Union, types.UnionType):
        return _union_reader(hint, [_reader(a) for a in args])
    if origin is Literal:
        allowed = frozenset(args)

        def literal(value: Any) -> Any:
            if value not in allowed:
                raise SnapshotError(f"is not one of {sorted(allowed)}")
            return value
        return literal
    if origin is list:
        item = _reader(args[0])

        def listed(value: Any) -> Any:
            if type(value) is not list:
                raise SnapshotError("is not a list")
            return [item(v) for v in value]
        return listed
    if origin is dict:
        entry = _reader(args[1])

        def mapped(value: Any) -> Any:
            if type(value) is not dict:
                raise SnapshotError("is not an object")
            return {k: entry(v) for k, v in value.items()}
        return mapped
    if hint is Any:
        return lambda value: value
    if hint is type(None):
        def null(value: Any) -> Any:
            if value is not None:
                raise SnapshotError("is not null")
            return None
        return null
    kinds = _SCALARS[hint]  # exact types: a bool is no int here, as in JSON

    def scalar(value: Any) -> Any:
        if type(value) not in kinds:
            raise SnapshotError(f"is not {hint.__name__}")
        return value
    return scalar


def _union_reader(hint: Any, readers: list[Convert]) -> Convert:
    def union(value: Any) -> Any:
        for read in readers:
            try:
                return read(value)
            except SnapshotError:
                continue
        raise SnapshotError(f"is not {hint}")
    return union


def _dataclass_reader(cls: Any) -> Convert:
    spec = [(f.name, json_key(f), _reader(hint),
             f.default is MISSING and f.default_factory is MISSING)
            for f, hint in json_fields(cls)]
    known = {key for _, key, _, _ in spec}

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise SnapshotError(f"{cls.__name__} is not an object")
        values: dict[str, Any] = {}
        for name, key, convert, required in spec:
            if key in value:
                try:
                    values[name] = convert(value[key])
                except SnapshotError as exc:
                    raise SnapshotError(f"{key} {exc}") from None
            elif required:
                raise SnapshotError(f"{cls.__name__} needs {key!r}")
        if len(value) > len(values):
            values["extra"] = {k: v for k, v in value.items() if k not in known}
        return cls(**values)
    return read


def _writer(hint: Any) -> Convert:
    """The function that turns a typed value into fresh JSON-ready objects."""
    writer = _WRITERS.get(hint)
    if writer is None:
        writer = _WRITERS[hint] = _make_writer(hint)
    return writer


def _make_writer(hint: Any) -> Convert:
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        return _dataclass_writer(hint)
    if origin in (Union, types.UnionType):
        # Only a dataclass in a union needs writing out (``bool | Recording``); the
        # snapshot has no union of containers.
        classes: list[tuple[Any, Convert]] = [(a, _writer(a)) for a in args
                                              if is_dataclass(a)]

        def union(value: Any) -> Any:
            for cls, write in classes:
                if isinstance(value, cls):
                    return write(value)
            return value
        return union
    if origin is list:
        item = _writer(args[0])
        return lambda value: [item(v) for v in value]
    if origin is dict:
        entry = _writer(args[1])
        return lambda value: {k: entry(v) for k, v in value.items()}
    return lambda value: value  # str, int, float, bool, None, a Literal: immutable


def _dataclass_writer(cls: Any) -> Convert:
    spec = [(f.name, json_key(f), _writer(hint), f.metadata.get("omit"))
            for f, hint in json_fields(cls)]

    def write(value: Any) -> Any:
        out: dict[str, Any] = {}
        for name, key, convert, omit in spec:
            item = getattr(value, name)
            if (omit == "none" and item is None) or (omit == "empty" and not item):
                continue
            out[key] = convert(item)
        if value.extra:
            out.update(copy.deepcopy(value.extra))
        return out
    return write


def _copier(hint: Any) -> Convert:
    """The function that copies a typed value deeply (faster than copy.deepcopy, which
    goes through every dataclass's pickling protocol)."""
    copier = _COPIERS.get(hint)
    if copier is None:
        copier = _COPIERS[hint] = _make_copier(hint)
    return copier


def _make_copier(hint: Any) -> Convert:
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        spec = [(f.name, _copier(h)) for f, h in json_fields(hint)]  # type: ignore[arg-type]
        cls: Any = hint

        def copy_dataclass(value: Any) -> Any:
            out = cls(**{name: convert(getattr(value, name)) for name, convert in spec})
            if value.extra:
                out.extra = copy.deepcopy(value.extra)
            return out
        return copy_dataclass
    if origin in (Union, types.UnionType):
        classes: list[tuple[Any, Convert]] = [(a, _copier(a)) for a in args
                                              if is_dataclass(a)]

        def union(value: Any) -> Any:
            for kind, convert in classes:
                if isinstance(value, kind):
                    return convert(value)
            return value
        return union
    if origin is list:
        item = _copier(args[0])
        return lambda value: [item(v) for v in value]
    if origin is dict:
        entry = _copier(args[1])
        return lambda value: {k: entry(v) for k, v in value.items()}
    return lambda value: value
