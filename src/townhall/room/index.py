"""The Space index: what lists need, kept up to date from the bucket's watch, no I/O.

Each api process feeds every write it sees (``apply``) and every deletion (``remove``)
into one ``SpaceIndex``, then answers list requests from it (``page``) in
O(log n + limit), however many Spaces were ever created. Public Spaces sit in one sorted
list per state; private ones are listed only through their people (host and stage) or
their id (a token for that Space), so a viewer's private Spaces are looked up, never
scanned for. Expiry (``expired``) reads the oldest ended or stale scheduled Spaces from
the front of one more sorted list.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from bisect import bisect_right, insort
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from townhall.problems import BadInput
from townhall.room.snapshot import Space, public_view

STATES = ("live", "scheduled", "ended")
NEVER = 1e18  # sorts after every real time; JSON-safe, unlike inf
Key = tuple[float, float, str]


@dataclass(frozen=True)
class Viewer:
    """Who asks for a list: their identity and the one Space their token is for."""

    identity: str | None = None
    space: str | None = None


@dataclass(frozen=True)
class Item:
    """One Space as the index holds it."""

    id: str
    state: str
    revision: int
    private: bool
    people: frozenset[str]          # host, stage, invitees, allowed: who may see it
    key: Key                        # its place in its state's list
    expires_from: float | None      # when retention starts counting; None = never
    view: dict[str, Any]            # the public view, as list items show it
    access: Space | None            # private Spaces: what the access decision reads


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        parsed = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def sort_key(snap: Space) -> Key:
    """Live: most listeners first, then latest started; scheduled: soonest start first
    (no start time last), then oldest; ended: newest first. The id breaks ties."""
    sid, state = snap.id, snap.state
    if state == "live":
        return (-float(snap.listeners), -float(snap.started_at or 0), sid)
    if state == "scheduled":
        start = _ts(snap.scheduled_start)
        return (NEVER if start is None else start, float(snap.created_at), sid)
    return (-float(snap.ended_at or snap.created_at or 0), 0.0, sid)


def _expires_from(snap: Space) -> float | None:
    """Ended: from the end. Scheduled and never started: from the later of creation and
    the announced start. Live: never."""
    if snap.state == "ended":
        # A recorded Space stays while its recording does: the recorder has yet to fold it
        # in (true), or it is kept until it expires (townhall.recording).
        if snap.recording is True:
            return None
        ended = float(snap.ended_at or snap.created_at or 0)
        if snap.finished is not None:
            return max(ended, float(snap.finished.expires_at))
        return ended
    if snap.state == "scheduled":
        start = _ts(snap.scheduled_start) or 0.0
        return max(float(snap.created_at), start)
    return None


def _access(snap: Space) -> Space:
    """What the access decision (townhall.grants) reads of a private Space: its people,
    blocks and settings, without what it does not need (requests, counts, edges)."""
    return replace(snap, description="", requests=[], reactions={}, record_spans=[],
                   edges={}, nets={}, clips=[], recording=False, extra={})


def item_of(snap: Space, revision: int) -> Item:
    """What the index keeps of one Space document."""
    people: set[str] = set()
    if snap.private:
        people = {p.id for p in snap.stage} | {i.id for i in snap.invites}
        people.add(snap.host.id)
        people.update(snap.allowed)
    return Item(id=snap.id, state=snap.state, revision=revision,
                private=snap.private, people=frozenset(people),
                key=sort_key(snap), expires_from=_expires_from(snap),
                view=public_view(snap),
                access=_access(snap) if snap.private else None)


def encode_cursor(state: str, key: Key) -> str:
    """An opaque cursor pointing after ``key`` in the list of Spaces in ``state``."""
    raw = json.dumps([state, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, states: tuple[str, ...]) -> tuple[str, Key]:
    """The state and key a cursor points after; BadInput if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state, a, b, sid = json.loads(raw)
        key = (float(a), float(b), str(sid))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadInput("cursor is not one this server gave out",
                       slug="bad-parameters") from None
    if state not in states:
        raise BadInput("cursor belongs to another list", slug="bad-parameters")
    return str(state), key


class SpaceIndex:
    """Spaces by state, in list order, with private ones reachable only via their people."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._public: dict[str, list[Key]] = {s: [] for s in STATES}
        self._by_key: dict[Key, str] = {}
        self._by_person: dict[str, set[str]] = {}   # identity -> private Space ids
        self._expiry: list[tuple[float, str]] = []
        self._gone: dict[str, int] = {}             # deleted here, not yet seen deleted
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, space: str) -> Item | None:
        """The Space's list entry; None if the index does not hold it."""
        return self._items.get(space)

    def count(self, state: str) -> int:
        """Spaces in ``state`` (public and private)."""
        return self._counts[state]

    # --- changes -------------------------------------------------------------------------

    def apply(self, snap: Space, revision: int) -> bool:
        """Take a Space document at ``revision``; an older or repeated one is ignored.
        Returns whether the index changed."""
        sid = snap.id
        old = self._items.get(sid)
        if (old is not None and revision <= old.revision) or revision <= self._gone.get(sid, 0):
            return False
        if old is not None:
            self._unlink(old)
        item = item_of(snap, revision)
        self._items[sid] = item
        self._counts[item.state] += 1
        if item.private:
            for person in item.people:
                self._by_person.setdefault(person, set()).add(sid)
        else:
            insort(self._public[item.state], item.key)
            self._by_key[item.key] = sid
        if item.expires_from is not None:
            insort(self._expiry, (item.expires_from, sid))
        return True

    def remove(self, space: str, revision: int | None = None) -> bool:
        """Forget a Space. ``revision`` None: deleted by this process (writes older than
        what it held are ignored until the bucket's deletion arrives); else the
        deletion as the watch delivers it."""
        old = self._items.pop(space, None)
        if revision is None:
            if old is not None:
                self._gone[space] = old.revision
        else:
            self._gone.pop(space, None)
        if old is None:
            return False
        self._unlink(old)
        return True

    def _unlink(self, item: Item) -> None:
        self._counts[item.state] -= 1
        if item.private:
            for person in item.people:
                spaces = self._by_person.get(person)
                if spaces is not None:
                    spaces.discard(item.id)
                    if not spaces:
                        del self._by_person[person]
        else:
            keys = self._public[item.state]
            at = bisect_right(keys, item.key) - 1
            if at >= 0 and keys[at] == item.key:
                del keys[at]
            self._by_key.pop(item.key, None)
        if item.expires_from is not None:
            at = bisect_right(self._expiry, (item.expires_from, item.id)) - 1
            if at >= 0 and self._expiry[at] == (item.expires_from, item.id):
                del self._expiry[at]

    # --- reading -------------------------------------------------------------------------

    def _private_for(self, viewer: Viewer, state: str,
                     admits: Callable[[Item], bool] | None) -> list[Item]:
        ids = set(self._by_person.get(viewer.identity or "", ())) if viewer.identity else set()
        if viewer.space:
            ids.add(viewer.space)
        found = [self._items[s] for s in ids if s in self._items]
        return sorted((i for i in found if i.private and i.state == state
                       and (admits is None or admits(i))), key=lambda i: i.key)

    def page(self, states: tuple[str, ...], cursor: str | None, limit: int,
             viewer: Viewer, admits: Callable[[Item], bool] | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` Spaces in ``states`` (in that order) after ``cursor``, and the
        cursor of the next page (None at the end). A cursor is a position, not an offset:
        Spaces added or removed before it do not shift what comes next. Private Spaces
        are the viewer's candidates (looked up, never scanned for), each also passed
        through ``admits`` (the access decision, with ``Item.access``)."""
        start_state, after = (decode_cursor(cursor, states) if cursor
                              else (states[0], None))
        out: list[Item] = []
        for state in states[states.index(start_state):]:
            keys = self._public[state]
            at = bisect_right(keys, after) if after is not None else 0
            public = [self._items[self._by_key[k]] for k in keys[at:at + limit + 1 - len(out)]]
            private = [i for i in self._private_for(viewer, state, admits)
                       if after is None or i.key > after]
            out += sorted(public + private, key=lambda i: i.key)[:limit + 1 - len(out)]
            after = None
            if len(out) > limit:
                break
        if len(out) <= limit:
            return [i.view for i in out], None
        last = out[limit - 1]
        return [i.view for i in out[:limit]], encode_cursor(last.state, last.key)

    def expired(self, before: float, limit: int = 100) -> list[tuple[str, int]]:
        """Up to ``limit`` (id, revision) of ended or never-started Spaces whose retention
        began before ``before``, oldest first."""
        out: list[tuple[str, int]] = []
        for when, sid in self._expiry[:limit]:
            if when >= before:
                break
            out.append((sid, self._items[sid].revision))
        return out
