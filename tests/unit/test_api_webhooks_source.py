"""The webhook event source's bookkeeping: what a watch of the spaces bucket turns into
events (initial values and re-reads are not changes)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import cast

from tests.fakebus import FakeBus
from townhall.api.webhooks import EventSource
from townhall.bus.bus import Change, Watch
from townhall.room import rules
from townhall.room.rules import Actor
from townhall.room.snapshot import Space, encode

ADA = Actor("ada", "Ada")


class Ready:
    """A stand-in for the bus's Watch: only ``ready`` is read."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()


def change(doc: Space | None, revision: int, key: str = "k3v9x2m4qa") -> Change:
    return Change(key=key, revision=revision, value=None if doc is None else encode(doc))


def queued(source: EventSource) -> list[str]:
    out = []
    while not source.queue.empty():
        out.append(source.queue.get_nowait().type)
    return out


def test_initial_values_make_no_events_and_later_changes_do() -> None:
    source = EventSource(FakeBus())
    watch = Ready()
    source.watch = cast(Watch, watch)
    doc = rules.create("k3v9x2m4qa", ADA, title="Night", now=1.0)
    source.changed(change(doc, 1))
    assert queued(source) == []          # what an api sees when it starts
    watch.ready.set()
    live = replace(rules.start(doc, ADA, now=2.0), version=2)
    source.changed(change(live, 2))
    assert queued(source) == ["space.started"]
    # A restarted watch re-reads the newest value: nothing new.
    source.changed(change(live, 2))
    assert queued(source) == []


def test_a_new_space_after_start_is_scheduled_and_deletion_forgets_it() -> None:
    source = EventSource(FakeBus())
    watch = Ready()
    watch.ready.set()
    source.watch = cast(Watch, watch)
    doc = rules.create("abcdefghij", ADA, title="Later", now=1.0)
    source.changed(change(doc, 7, key="abcdefghij"))
    assert queued(source) == ["space.scheduled"]
    source.changed(change(None, 8, key="abcdefghij"))
    assert "abcdefghij" not in source.seen
    # First sight of an old Space (its creation was before this api): no guessing.
    old = replace(doc, id="zzzzzzzzzz", version=9)
    source.changed(change(old, 9, key="zzzzzzzzzz"))
    assert queued(source) == []


def test_a_bad_entry_is_skipped() -> None:
    source = EventSource(FakeBus())
    source.changed(Change(key="k3v9x2m4qa", revision=1, value=b"not json"))
    assert source.seen == {} and queued(source) == []
