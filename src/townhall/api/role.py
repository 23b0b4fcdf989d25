"""The api role in one process: its caches, limits and background loops (publishing
snapshots, folding edge reports, expiring old Spaces). Its HTTP routes are
townhall.api.routes.

Thin shell: the rules are in townhall.room.rules, counting in townhall.room.counting, state
in NATS KV through townhall.api.store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from townhall import grants
from townhall.api.clientaddr import ClientAddress, client_address, parse_networks
from townhall.api.ratelimit import TokenBuckets
from townhall.api.store import SpaceStore
from townhall.auth import Identity
from townhall.bus import subjects
from townhall.bus.bus import CasConflict, Change, Message, Watch
from townhall.bus.messages import (
    ListenerStats,
    decode_edge_heartbeat,
    decode_listener_stats,
    decoded,
)
from townhall.context import Context
from townhall.problems import NotFound, TooMany
from townhall.room import rules
from townhall.room.coalescer import Coalescer
from townhall.room.counting import EdgeRegistry, ReactionTally, fold
from townhall.room.index import STATES, SpaceIndex
from townhall.room.snapshot import SnapshotError, Space, decode, public_view

log = logging.getLogger(__name__)

LIVE_SPACES = Gauge("townhall_live_spaces", "Spaces currently live")
SNAPSHOTS = PromCounter("townhall_state_snapshots_published_total",
                        "Room state snapshots published on NATS")
INDEXED = Gauge("townhall_indexed_spaces", "Spaces in this api's list index", ["state"])
EXPIRED = PromCounter("townhall_spaces_expired_total",
                      "Ended or never-started Spaces deleted after the retention time")
EXPIRE_BATCH = 500


class Api:
    """The api role's state in this process: caches and counters, never the truth."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = SpaceStore(ctx.bus, on_change=self._changed, on_write=self._wrote)
        # Lists are answered from this index, kept by watching the bucket (never a scan).
        self.index = SpaceIndex()
        # Run before an expired Space's document is deleted (``await hook(space_id)``).
        self.before_expire: list[Callable[[str], Awaitable[None]]] = []
        self._watch: Watch | None = None
        self.trusted = parse_networks(ctx.settings.trusted_proxies)
        self.coalescer = Coalescer()
        self.tally = ReactionTally()
        self.registry = EdgeRegistry()
        self.writes = TokenBuckets(rate=5.0, burst=20.0)
        self.reacts = TokenBuckets(rate=10.0, burst=30.0)
        # Guest sessions per client address: each one is a fresh identity with its own
        # per-identity buckets, so without this one address could mint identities (and
        # their allowances) without end. 30 at once (a class behind one NAT), then one every
        # 2 s. Loopback clients are not counted (see guest_limit).
        self.guests = TokenBuckets(rate=0.5, burst=30.0)
        # Space creation per identity and per client address (each Space is kept until
        # it expires, and a live one costs a stage).
        burst, rate = ctx.settings.space_budget
        self.creations = TokenBuckets(rate=rate, burst=burst)
        burst, rate = ctx.settings.space_budget_address
        self.creations_by_address = TokenBuckets(rate=rate, burst=burst)
        # Spaces with listeners counted, so the tally lets stale edge reports expire.
        self.counted: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # One publisher, in order: a newer snapshot never goes out before an older one.
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    # --- identity and limits ---------------------------------------------------------

    def who(self, request: Request) -> Identity:
        """The caller's verified token, or 401."""
        return self.ctx.issuer.from_header(request.headers.get("authorization"))

    def maybe_who(self, request: Request) -> Identity | None:
        """The caller's verified token; None without one (a bad one is still 401)."""
        header = request.headers.get("authorization")
        return self.ctx.issuer.from_header(header) if header else None

    def limit(self, ident: Identity, buckets: TokenBuckets | None = None) -> None:
        """One more change by ``ident`` (from ``buckets``, else the write budget), or 429."""
        self._throttle(self.writes if buckets is None else buckets, ident.id,
                       "slow down: too many changes from you")

    def reaction_limit(self, key: str) -> None:
        """One more reaction from ``key`` (an identity, or an anonymous caller's address)."""
        self._throttle(self.reacts, key, "slow down: too many reactions from you")

    @staticmethod
    def _throttle(buckets: TokenBuckets, key: str, detail: str) -> None:
        """Take one call for ``key`` from ``buckets``, or 429 rate-limited with Retry-After."""
        wait = buckets.take(key, time.monotonic())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooMany(f"{detail}; try again in {seconds} s", retry_after=seconds,
                          slug="rate-limited")

    def client(self, request: Request) -> ClientAddress:
        """The client address as a trusted proxy forwards it (uvicorn's proxy headers,
        plus RFC 7239 Forwarded); ``local`` only for this machine's own, unproxied calls."""
        peer = request.client.host if request.client else ""
        return client_address(peer, request.headers, self.trusted)

    def guest_limit(self, request: Request) -> None:
        """One more guest session from this client address, or 429. This machine itself
        (the default open mode) is not limited; a proxy forwarding for others is."""
        client = self.client(request)
        if not client.local:
            self._throttle(self.guests, client.address,
                           "too many guest sessions from your address")

    def creation_limit(self, ident: Identity, request: Request) -> None:
        """One more Space for this identity and this client address, or 429."""
        self._throttle(self.creations, ident.id, "you have created too many Spaces")
        client = self.client(request)
        if not client.local:
            self._throttle(self.creations_by_address, client.address,
                           "too many Spaces created from your address")

    @staticmethod
    def may_see(snap: Space, ident: Identity | None) -> bool:
        """Whether ``ident`` may read this Space (townhall.grants)."""
        return grants.allows(ident, "read", snap)

    async def authorized(self, space: str, ident: Identity | None,
                         action: str = "read") -> Space:
        """The Space's document, if ``ident`` may do ``action`` to it (townhall.grants)."""
        snap = await self.store.get(space)
        grants.authorize(ident, action, snap)
        return snap

    def client_key(self, request: Request) -> str:
        """Who an anonymous caller is for rate limits: their address."""
        return "addr:" + self.client(request).address

    @staticmethod
    def actor(ident: Identity) -> rules.Actor:
        """The person acting; a guest's network rides along so a block can stick to it."""
        return rules.Actor(ident.id, ident.name, ident.net if ident.guest else None)

    # --- state publishing --------------------------------------------------------------

    def _changed(self, snap: Space) -> None:
        ready = self.coalescer.offer(public_view(snap), time.monotonic())
        if ready is not None:
            self._outbox.put_nowait(ready)

    # --- the index -----------------------------------------------------------------------

    @property
    def listing_ready(self) -> bool:
        """Whether the index holds every Space (the watch's initial values are in)."""
        return self._watch is not None and self._watch.ready.is_set()

    def _wrote(self, snap: Space, revision: int) -> None:
        """This process's own write: in the index at once, before the watch echoes it."""
        if self.index.apply(snap, revision):
            self._indexed(snap.id)

    def _on_bucket(self, change: Change) -> None:
        if change.value is None:
            self.index.remove(change.key, change.revision)
        else:
            try:
                snap: Space | None = decode(change.value)
            except SnapshotError:
                snap = None
            if snap is None or snap.id != change.key:
                log.warning("unreadable Space document", extra={"space": change.key})
                return
            if not self.index.apply(snap, change.revision):
                return
        self._indexed(change.key)

    def _indexed(self, space: str) -> None:
        item = self.index.get(space)
        listeners = int(item.view.get("listeners") or 0) if item is not None else 0
        if listeners:
            self.counted[space] = listeners
        else:
            self.counted.pop(space, None)
        for state in STATES:
            INDEXED.labels(state).set(self.index.count(state))
        LIVE_SPACES.set(self.index.count("live"))

    async def _expire_loop(self) -> None:
        retention = self.ctx.settings.ended_retention
        if retention <= 0:
            return
        while True:
            await asyncio.sleep(min(60.0, max(0.5, retention / 4)))
            try:
                # A full batch means a backlog (e.g. retention just shortened): go on.
                done = EXPIRE_BATCH
                while done >= EXPIRE_BATCH:
                    done = await self.expire_once(time.time() - retention)
            except Exception:
                log.exception("expiring ended Spaces failed")

    async def expire_once(self, before: float) -> int:
        """Delete the Spaces whose retention began before ``before``; returns how many.
        Safe with several apis: a delete is conditional on the revision the index holds,
        so a Space someone changed (or deleted) meanwhile is left to the next round."""
        done = 0
        for space, revision in self.index.expired(before, limit=EXPIRE_BATCH):
            try:
                for hook in self.before_expire:  # e.g. delete the Space's recording files
                    await hook(space)
                await self.ctx.bus.kv_delete(subjects.SPACES_BUCKET, space, revision)
            except CasConflict:
                continue
            self.index.remove(space)
            self._indexed(space)
            EXPIRED.inc()
            done += 1
        return done

    async def _publish(self, snap: dict[str, Any]) -> None:
        data = json.dumps(snap, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            await self.ctx.bus.publish(subjects.state(snap["id"]), data)
            SNAPSHOTS.inc()
        except Exception:
            log.exception("could not publish state", extra={"space": snap["id"]})

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await self._publish(await asyncio.wait_for(self._outbox.get(), 0.05))
            for snap in self.coalescer.due(time.monotonic()):
                await self._publish(snap)

    # --- counting ------------------------------------------------------------------------

    async def _tally_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._tally_once()
            except Exception:
                log.exception("folding edge reports failed")

    async def _tally_once(self) -> None:
        pulled = await self.ctx.bus.pull(subjects.STATS_STREAM, subjects.STATS_CONSUMER,
                                         "townhall.*.stats.*", batch=1000, timeout=0.5)
        reports: dict[str, list[ListenerStats]] = {}
        for msg, _ in pulled:
            report = decoded(decode_listener_stats, msg.data, msg.subject,
                             "an unreadable edge report", log)
            if report is None:  # acked below all the same: it cannot get better
                continue
            reports.setdefault(msg.subject.split(".")[1], []).append(report)
        reactions = self.tally.take()
        # Spaces with listeners counted but no report this round: let stale edges expire.
        quiet = [s for s, n in self.counted.items() if n and s not in reports]
        now = time.time()
        for space in set(reports) | set(reactions) | set(quiet):
            got, counts = reports.get(space, []), reactions.get(space, Counter())

            def change(s: Space, got: list[ListenerStats] = got,
                       counts: Counter[str] = counts) -> Space:
                return fold(s, got, counts, now)

            with contextlib.suppress(NotFound):
                snap = await self.store.mutate(space, change)
                self.counted[space] = snap.listeners
        for _, ack in pulled:
            with contextlib.suppress(Exception):
                await ack()

    async def _on_edge(self, msg: Message) -> None:
        beat = decoded(decode_edge_heartbeat, msg.data, msg.subject,
                       "an unreadable edge heartbeat", log)
        if beat is None:
            return
        self.registry.update(beat, time.time())

    async def start(self) -> None:
        """Build the index from the bucket, then start the publishing, tally and expiry loops."""
        # The watch's initial values build the index: one pass at startup, none after.
        self._watch = await self.ctx.bus.kv_watch(subjects.SPACES_BUCKET, self._on_bucket)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._watch.ready.wait(), 30)
        await self.ctx.bus.subscribe(subjects.EDGES, self._on_edge)
        self._tasks += [asyncio.ensure_future(self._flush_loop()),
                        asyncio.ensure_future(self._tally_loop()),
                        asyncio.ensure_future(self._expire_loop())]

    async def stop(self) -> None:
        """Publish what is still queued, then stop the loops and the watch."""
        while not self._outbox.empty():
            await self._publish(self._outbox.get_nowait())
        for snap in self.coalescer.due(float("inf")):
            await self._publish(snap)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch is not None:
            await self._watch.stop()
