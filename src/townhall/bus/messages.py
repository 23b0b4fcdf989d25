"""Messages that cross a process boundary on the bus, each typed once, encoded in one place.

The WHIP request/reply between the api and the stage that owns a Space
(``townhall.stage.whip.<id>``) and the stage's heartbeat (``townhall.stages.<node>``).
Both sides build and read these dataclasses; ``encode`` and the ``decode_*`` functions are
the only code that turns them into JSON bytes and back, so a field cannot be spelt two ways.
The JSON is what docs/architecture.md's subject table shows: ``None`` fields are left out,
unknown fields are ignored (a newer peer may send more), and a malformed message is a
``MessageError``, never a half-read dict.
"""

from __future__ import annotations

import json
import types
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints


class MessageError(ValueError):
    """Bytes that are not the message they were read as."""


@dataclass(frozen=True)
class WhipOffer:
    """api → stage: a speaker's checked SDP offer (application/sdp as text)."""

    identity: str
    name: str
    sdp: str


@dataclass(frozen=True)
class WhipLeave:
    """api → stage: end one WHIP session (``DELETE <Location>``); on the wire
    ``{"op": "leave", ...}``."""

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


BusMessage = WhipOffer | WhipLeave | WhipReply | StageHeartbeat
M = TypeVar("M", WhipOffer, WhipLeave, WhipReply, StageHeartbeat)


def encode(message: BusMessage) -> bytes:
    """The message as the JSON bytes that go on the bus."""
    body = {k: v for k, v in asdict(message).items() if v is not None}
    if isinstance(message, WhipLeave):
        body = {"op": "leave", **body}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


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
    beat = _build(StageHeartbeat, _object(data))
    if not beat.node:
        raise MessageError("a heartbeat names its node")
    return beat


def _object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    return body


def _build(cls: type[M], body: dict[str, Any]) -> M:
    """``cls`` from ``body``'s fields, each checked against its annotation."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in body:
            if f.default is MISSING and f.default_factory is MISSING:
                raise MessageError(f"{cls.__name__} needs {f.name!r}")
            continue
        value, hint = body[f.name], hints[f.name]
        if not _fits(value, hint):
            raise MessageError(f"{cls.__name__}.{f.name} is not {hint}")
        if isinstance(value, int) and (hint is float or float in get_args(hint)):
            value = float(value)  # JSON writes 2.0 as 2
        values[f.name] = value
    return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            _fits(k, key) and _fits(v, item) for k, v in value.items())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
