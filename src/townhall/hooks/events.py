"""The events a change of a Space makes: a pure diff of two snapshots.

Each event's id is derived from the Space and the snapshot version that made it, so every
api process that sees the same change derives the same id: JetStream stores it once
(``Nats-Msg-Id``) and receivers deduplicate deliveries by it (``webhook-id``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from townhall.room.snapshot import Space, Speaker, public_view

Snapshot = Space

SCHEDULED = "space.scheduled"
STARTED = "space.started"
ENDED = "space.ended"
SPEAKER_JOINED = "speaker.joined"
SPEAKER_LEFT = "speaker.left"
LISTENERS_MILESTONE = "listeners.milestone"
# Emitted when a snapshot's ``recording.state`` becomes "ready" (the recording work sets
# it; until then the type is documented and never sent).
RECORDING_READY = "recording.ready"
EVENT_TYPES = (SCHEDULED, STARTED, ENDED, SPEAKER_JOINED, SPEAKER_LEFT,
               LISTENERS_MILESTONE, RECORDING_READY)
MILESTONES = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


@dataclass(frozen=True)
class Event:
    """One webhook event: ``type``, the Space it is about and what happened."""

    id: str
    type: str
    space: str
    data: dict[str, Any] = field(default_factory=dict)

    def body(self, timestamp: float) -> bytes:
        """The JSON payload, Standard Webhooks' ``{type, timestamp, data}`` shape."""
        return encode({"type": self.type, "timestamp": _iso(timestamp),
                       "data": self.data})


def encode(doc: dict[str, Any]) -> bytes:
    """An event as the compact UTF-8 JSON body that is signed and sent."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _space(view: dict[str, Any]) -> dict[str, Any]:
    """The part of the Space every event carries, from its public view."""
    return {k: view[k] for k in ("id", "title", "state", "version", "host", "listeners",
                                 "private")}


def _stage(doc: Snapshot | None) -> dict[str, Speaker]:
    return {p.id: p for p in doc.stage} if doc is not None else {}


def _recording_ready(doc: Snapshot | None) -> bool:
    return doc is not None and doc.finished is not None and doc.finished.state == "ready"


def events_between(old: Snapshot | None, new: Snapshot | None) -> list[Event]:
    """What happened between two snapshots of one Space (``old`` None: it was just
    created; ``new`` None: deleted, which is no event). In the order a reader expects:
    lifecycle first when a Space starts, last when it ends."""
    if new is None:
        return []
    space, version, view = new.id, new.version, public_view(new)
    summary = _space(view)

    def event(kind: str, suffix: str = "", **data: Any) -> Event:
        eid = f"evt_{space}_{version}_{kind}" + (f"_{suffix}" if suffix else "")
        return Event(id=eid, type=kind, space=space, data={"space": summary, **data})

    out: list[Event] = []
    state_old = None if old is None else old.state
    state_new = new.state
    if old is None and state_new == "scheduled":
        out.append(event(SCHEDULED, scheduled_start=new.scheduled_start))
    if state_new == "live" and state_old != "live":
        out.append(event(STARTED))
    # A new Space's stage is its host, announced by space.scheduled, not as a join.
    before, after = _stage(old if old is not None else new), _stage(new)
    for pid in before.keys() - after.keys():
        out.append(event(SPEAKER_LEFT, pid, speaker=_who(before[pid])))
    for pid in after.keys() - before.keys():
        out.append(event(SPEAKER_JOINED, pid, speaker=_who(after[pid])))
    if state_new == "ended" and state_old != "ended":
        out.append(event(ENDED))
    if _recording_ready(new) and not _recording_ready(old):
        out.append(event(RECORDING_READY, recording=view["recording"]))
    was, now = (old.listeners if old is not None else 0), new.listeners
    for mark in MILESTONES:
        if was < mark <= now:
            # Once per Space and milestone: the id has no version in it.
            out.append(Event(id=f"evt_{space}_listeners_{mark}", type=LISTENERS_MILESTONE,
                             space=space, data={"space": summary, "milestone": mark}))
    return _ordered(out)


def _ordered(events: list[Event]) -> list[Event]:
    # Deterministic order inside one change (sets have none): by kind, then id.
    rank = {kind: i for i, kind in enumerate(
        (SCHEDULED, STARTED, SPEAKER_LEFT, SPEAKER_JOINED, ENDED, RECORDING_READY,
         LISTENERS_MILESTONE))}
    return sorted(events, key=lambda e: (rank[e.type], e.id))


def _who(person: Speaker) -> dict[str, Any]:
    return {"id": person.id, "name": person.name, "role": person.role}
