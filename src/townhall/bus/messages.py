"""Messages that cross a process boundary on the bus, each typed once, encoded in one place.

Every JSON message one role sends another on NATS, the Space snapshot apart, is a dataclass
here:

=================================  ======================  ============================
subject                            from → to               message
=================================  ======================  ============================
``townhall.stage.whip.<id>``       api → owning stage      ``WhipOffer`` / ``WhipLeave``,
                                   (request/reply)         answered by ``WhipReply``
``townhall.<id>.control``          api → stage, edges      ``Kick`` / ``SpaceEnded``
``townhall.<id>.levels``           stage → edges           ``Levels``
``townhall.<id>.stats.<node>``     edge → api (STATS)      ``ListenerStats``
``townhall.edges.<node>``          edge → api              ``EdgeHeartbeat``
``townhall.stages.<node>``         stage → api, stages     ``StageHeartbeat``
=================================  ======================  ============================

The rest is typed where its format lives: the Space snapshot on ``townhall.<id>.state``
(``room/snapshot.py``), the binary media chunks and AAC batches (``media/chunk.py``,
``media/aac.py``), the webhook events on ``townhall-hooks.<id>`` (``hooks/events.py``: the
signed body each endpoint receives, passed through untouched); ``townhall.<id>.aacwant`` is
a signal with an empty body.

Both sides build and read these dataclasses; ``encode`` and the ``decode_*`` functions are
the only code that turns them into JSON bytes and back, so a field cannot be spelt two ways.
The JSON is what docs/architecture.md's subject table shows: ``None`` fields are left out,
unknown fields are ignored (a newer peer may send more), and a malformed or unknown message
is a ``MessageError`` (the receiving shell logs it and drops the message), never a
half-read dict.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class MessageError(ValueError):
    """Bytes that are not the message they were read as."""


@dataclass(frozen=True)
class WhipOffer:
    """api → stage: a speaker's checked SDP offer (application/sdp as text)."""

    identity: str
    name: str
    sdp: str
    # The Space's version the api authorized the offer against: a stage whose roster is
    # older waits briefly for the state message instead of refusing a speaker just put on
    # stage. Absent from an older api.
    version: int | None = None


@dataclass(frozen=True)
class WhipLeave:
    """api → stage: end one WHIP session (``DELETE <Location>``); on the wire
    ``{"op": "leave", ...}``."""

    TAG: ClassVar[tuple[str, str]] = ("op", "leave")

    identity: str
    session: str


WhipRequest = WhipOffer | WhipLeave


@dataclass(frozen=True)
class WhipReply:
    """stage → api: a status, a detail safe to show the client, and for a 201 the session
    id and the SDP answer; a refusal may carry its problem slug and (503) a retry delay."""

    status: int
    detail: str = ""
    slug: str | None = None
    retry_after: float | None = None
    session: str | None = None
    sdp: str | None = None

    @property
    def ok(self) -> bool:
        """The offer was answered (201) or the session left (200)."""
        return self.status in (200, 201)


@dataclass(frozen=True)
class StageHeartbeat:
    """stage → api, once a second: what the stage runs and its counters since it started."""

    node: str
    spaces: list[str] = field(default_factory=list)
    speakers: int = 0
    jitter_target_ms: float = 0.0
    ticks: int = 0
    late_frames: int = 0
    max_late_ms: float = 0.0
    fec_recovered: int = 0
    plc_frames: int = 0
    lost_packets: int = 0
    resent_packets: int = 0    # lost packets a speaker resent on NACK in time to play
    at: float = 0.0
    max_spaces: int = 0        # its budget of live Spaces (0: none)
    cpu: float = 0.0           # share of one core its process used lately
    draining: bool = False     # stopping: hands its Spaces over, takes none
    silent_ticks: int = 0      # ticks that only repeated a silent Space's silence packet
    # Spaces whose newest published chunk the stream may not hold: [seq, pts, sent_us]
    # (a stage taking one over numbers past it; stage.numbering).
    ahead: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Kick:
    """api → stage, edges: someone was removed (or shut out of a private Space); their WHIP
    sessions and listener connections close at once. ``{"type": "kick", ...}``."""

    TAG: ClassVar[tuple[str, str]] = ("type", "kick")

    identity: str
    block: bool = False


@dataclass(frozen=True)
class SpaceEnded:
    """api → stage, edges: the Space ended; the stage lets it go, edges close every
    listener (4410). ``{"type": "ended"}``."""

    TAG: ClassVar[tuple[str, str]] = ("type", "ended")


Control = Kick | SpaceEnded


@dataclass(frozen=True)
class SpeakerLink:
    """One speaker's uplink as the stage measures it (docs/protocol.md, ``links``)."""

    quality: str               # "good" | "fair" | "poor" (media/linkquality.py)
    loss_pct: float = 0.0
    jitter_ms: float = 0.0


@dataclass(frozen=True)
class Levels:
    """stage → edges, at most 4 a second: who is speaking. Edges forward it to WebSocket
    listeners as it is, tagged ``"type": "levels"`` (``levels_frame``)."""

    space: str
    levels: dict[str, float]   # identity → 0..1
    speaking: list[str] = field(default_factory=list)
    at: float = 0.0            # unix time
    links: dict[str, SpeakerLink] = field(default_factory=dict)  # older stages: none


@dataclass(frozen=True)
class ListenerStats:
    """edge → api through stream STATS, once a second per Space the edge feeds: its
    listeners there and the reactions they sent since the last report."""

    node: str
    at: float
    listeners: int = 0
    reactions: dict[str, int] = field(default_factory=dict)  # emoji → count since last
    url: str | None = None     # where listeners reach this edge
    capacity: int = 0


@dataclass(frozen=True)
class EdgeHeartbeat:
    """edge → api, once a second: where the edge is, its capacity and its listeners in all."""

    node: str
    at: float
    url: str | None = None
    capacity: int = 0
    listeners: int = 0


BusMessage = (WhipOffer | WhipLeave | WhipReply | StageHeartbeat | Kick | SpaceEnded | Levels
              | ListenerStats | EdgeHeartbeat)
D = TypeVar("D", bound="DataclassInstance")


def encode(message: BusMessage) -> bytes:
    """The message as the JSON bytes that go on the bus."""
    return _json(_body(message))


def levels_frame(levels: Levels) -> str:
    """The WebSocket text frame an edge sends its listeners for a levels message
    (docs/protocol.md): the same object, tagged ``"type": "levels"``."""
    return _json({"type": "levels", **_body(levels)}).decode()


_M = TypeVar("_M")


def decoded(decode: Callable[[bytes], _M], data: bytes, subject: str, what: str,
            log: logging.Logger) -> _M | None:
    """``decode(data)``, or None once ``log`` warned ``dropped <what> on <subject>``: a bus
    message that cannot be read is dropped by its handler, never raised in it."""
    try:
        return decode(data)
    except MessageError as exc:
        log.warning("dropped %s on %s: %s", what, subject, exc)
        return None


def decode_whip_request(data: bytes) -> WhipRequest:
    """An offer or a leave, as the api sent it."""
    body = _object(data)
    if body.get("op") == "leave":
        return _build(WhipLeave, body)
    return _build(WhipOffer, body)


def decode_whip_reply(data: bytes) -> WhipReply:
    """A stage's answer to a WHIP request."""
    return _build(WhipReply, _object(data))


def decode_heartbeat(data: bytes) -> StageHeartbeat:
    """A stage's heartbeat."""
    return _named(_build(StageHeartbeat, _object(data)))


def decode_control(data: bytes) -> Control:
    """A command on ``townhall.<id>.control``; a type this process does not know (from a
    newer api) is a ``MessageError`` too."""
    body = _object(data)
    kind = body.get("type")
    if kind == "kick":
        kick = _build(Kick, body)
        if not kick.identity:
            raise MessageError("a kick names an identity")
        return kick
    if kind == "ended":
        return SpaceEnded()
    raise MessageError(f"unknown control message {str(kind)[:40]!r}")


def decode_levels(data: bytes) -> Levels:
    """A stage's levels message."""
    return _build(Levels, _object(data))


def decode_listener_stats(data: bytes) -> ListenerStats:
    """An edge's per-Space report."""
    return _named(_build(ListenerStats, _object(data)))


def decode_edge_heartbeat(data: bytes) -> EdgeHeartbeat:
    """An edge's heartbeat."""
    return _named(_build(EdgeHeartbeat, _object(data)))


_N = TypeVar("_N", StageHeartbeat, ListenerStats, EdgeHeartbeat)


def _named(message: _N) -> _N:
    if not message.node:
        raise MessageError(f"a {type(message).__name__} names its node")
    return message


def _body(message: BusMessage) -> dict[str, Any]:
    body = {k: v for k, v in asdict(message).items() if v is not None}
    tag: tuple[str, str] | None = getattr(message, "TAG", None)
    return {tag[0]: tag[1], **body} if tag is not None else body


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    return body


def _build(cls: type[D], body: Mapping[str, Any]) -> D:
    """``cls`` from ``body``'s fields, each checked against its annotation."""
    values: dict[str, Any] = {}
    for name, convert, required in _schema(cls):
        if name not in body:
            if required:
                raise MessageError(f"{cls.__name__} needs {name!r}")
            continue
        try:
            values[name] = convert(body[name])
        except _Mismatch as exc:
            raise MessageError(f"{cls.__name__}.{name}: {exc}") from None
    return cls(**values)


class _Mismatch(MessageError):
    """A value that is not of its annotation (``_build`` names the field)."""


Convert = Callable[[Any], Any]


@functools.cache
def _schema(cls: type[DataclassInstance]) -> tuple[tuple[str, Convert, bool], ...]:
    """Each field's name, converter and whether it must be sent. Worked out once per
    class: resolving annotations costs far more than reading a message."""
    hints = get_type_hints(cls)
    return tuple((f.name, _converter(hints[f.name]),
                  f.default is MISSING and f.default_factory is MISSING) for f in fields(cls))


@functools.cache
def _converter(hint: Any) -> Convert:
    """A function taking a decoded JSON value to ``hint`` or raising ``_Mismatch``: a
    nested message built, an int where a float is due made a float (JSON writes 2.0 as 2),
    and never a bool for a number (True is an int to Python, not to the sender)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return _union(hint, [_converter(a) for a in args if a is not type(None)],
                      type(None) in args)
    if origin is list:
        item = _converter(args[0])
        return lambda v: [item(x) for x in _expect(v, list, hint)]
    if origin is dict:  # JSON keys are always strings
        value = _converter(args[1])
        return lambda v: {k: value(x) for k, x in _expect(v, dict, hint).items()}
    if isinstance(hint, type) and is_dataclass(hint):
        return lambda v: _build(hint, _expect(v, dict, hint))
    if hint is float:
        return lambda v: float(_expect(v, int | float, hint))
    return lambda v: _expect(v, hint, hint)


def _union(hint: Any, options: list[Convert], optional: bool) -> Convert:
    def convert(value: Any) -> Any:
        if value is None and optional:
            return None
        for option in options:
            with contextlib.suppress(_Mismatch):
                return option(value)
        raise _Mismatch(f"a {type(value).__name__} where {_name(hint)} is due")
    return convert


def _expect(value: Any, kind: Any, hint: Any) -> Any:
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise _Mismatch(f"a {type(value).__name__} where {_name(hint)} is due")


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)
