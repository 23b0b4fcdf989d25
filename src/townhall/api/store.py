"""Spaces in the JetStream key-value bucket: every change a compare-and-set, retried."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from townhall.bus import Bus, CasConflict, subjects
from townhall.bus.bus import Entry
from townhall.problems import NotFound, Unavailable
from townhall.room.rules import is_space_id
from townhall.room.snapshot import Space, clone, decode, encode, same_public

Snapshot = Space
Mutation = Callable[[Snapshot], Snapshot]
MAX_ATTEMPTS = 50


class SpaceStore:
    """Reads and changes Space snapshots; a change that loses a race is re-applied."""

    def __init__(self, bus: Bus, on_change: Callable[[Snapshot], None] | None = None,
                 on_write: Callable[[Snapshot, int], None] | None = None) -> None:
        self.bus = bus
        self.on_change = on_change      # the public view changed
        self.on_write = on_write        # any write landed, with its revision

    async def get(self, space: str) -> Snapshot:
        """The Space's document (NotFound if there is none)."""
        return decode((await self._entry(space)).value)

    async def _entry(self, space: str) -> Entry:
        # A malformed id is not a valid KV key: it names no Space, so 404, never a bus error.
        entry = await self.bus.kv_get(subjects.SPACES_BUCKET, space) if is_space_id(space) \
            else None
        if entry is None:
            raise NotFound(f"no Space {space!r}", slug="space-not-found")
        return entry

    async def create(self, snap: Snapshot) -> Snapshot:
        """Store a new Space (CasConflict if its id exists)."""
        revision = await self.bus.kv_create(subjects.SPACES_BUCKET, snap.id, encode(snap))
        if self.on_write:
            self.on_write(snap, revision)
        if self.on_change:
            self.on_change(snap)
        return snap

    async def mutate(self, space: str, change: Mutation) -> Snapshot:
        """Apply ``change`` with compare-and-set; the version grows when the public view
        changes. Refusals raised by ``change`` propagate untouched."""
        for attempt in range(MAX_ATTEMPTS):
            entry = await self._entry(space)
            old = decode(entry.value)
            new = change(clone(old))  # its own copy: it may change it in place
            if new == old:
                return old
            public_changed = not same_public(new, old)
            if public_changed:
                new.version = old.version + 1
            try:
                revision = await self.bus.kv_update(subjects.SPACES_BUCKET, space,
                                                    encode(new), entry.revision)
            except CasConflict:
                # Someone else changed it first: re-read and re-apply, with a little jitter
                # so a crowd of writers does not collide again in lock step.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            if self.on_write:
                self.on_write(new, revision)
            if public_changed and self.on_change:
                self.on_change(new)
            return new
        raise Unavailable("the Space is changing too fast; try again", retry_after=1,
                          slug="contention")
