"""The api role's HTTP routes: sessions, Spaces, stage actions, reactions, where to listen.

Thin shell: the rules are in townhall.room.rules, counting in townhall.room.tally, state
in NATS KV through townhall.room.store; this module reads requests and writes responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from townhall import grants
from townhall.api.clientaddr import ClientAddress, client_address, parse_networks
from townhall.api.models import ActionIn, ReactionIn, SessionIn, SpaceIn
from townhall.api.ratelimit import TokenBuckets
from townhall.api.schemas import Accepted, Listen, Me, Session, Snapshot, SpaceList, problems
from townhall.auth import Identity
from townhall.bus import subjects
from townhall.bus.bus import CasConflict, Change, Message, Watch
from townhall.context import Context
from townhall.problems import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    TooMany,
    Unavailable,
    Unprocessable,
)
from townhall.room import rules
from townhall.room.coalescer import Coalescer
from townhall.room.index import STATES, SpaceIndex, Viewer
from townhall.room.snapshot import REACTIONS, public_view
from townhall.room.store import SpaceStore
from townhall.room.tally import EdgeRegistry, ReactionTally, fold, rank_edges
from townhall.room.text import check_text

log = logging.getLogger(__name__)

LIVE_SPACES = Gauge("townhall_live_spaces", "Spaces currently live")
SNAPSHOTS = PromCounter("townhall_state_snapshots_published_total",
                        "Room state snapshots published on NATS")
ACTIONS_DONE = PromCounter("townhall_actions_total", "Stage and moderation actions",
                           ["action", "outcome"])
REACTIONS_IN = PromCounter("townhall_reactions_received_total", "Reactions taken by the api")
INDEXED = Gauge("townhall_indexed_spaces", "Spaces in this api's list index", ["state"])
EXPIRED = PromCounter("townhall_spaces_expired_total",
                      "Ended or never-started Spaces deleted after the retention time")
LIST_LIMIT, LIST_LIMIT_MAX = 50, 100
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
        return self.ctx.issuer.from_header(request.headers.get("authorization"))

    def maybe_who(self, request: Request) -> Identity | None:
        header = request.headers.get("authorization")
        return self.ctx.issuer.from_header(header) if header else None

    def limit(self, ident: Identity, buckets: TokenBuckets | None = None) -> None:
        self._throttle(self.writes if buckets is None else buckets, ident.id,
                       "slow down: too many changes from you")

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
    def may_see(snap: dict[str, Any], ident: Identity | None) -> bool:
        return grants.allows(ident, "read", snap)

    async def authorized(self, space: str, ident: Identity | None,
                         action: str = "read") -> dict[str, Any]:
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

    def _changed(self, snap: dict[str, Any]) -> None:
        ready = self.coalescer.offer(public_view(snap), time.monotonic())
        if ready is not None:
            self._outbox.put_nowait(ready)

    # --- the index -----------------------------------------------------------------------

    @property
    def listing_ready(self) -> bool:
        """Whether the index holds every Space (the watch's initial values are in)."""
        return self._watch is not None and self._watch.ready.is_set()

    def _wrote(self, snap: dict[str, Any], revision: int) -> None:
        """This process's own write: in the index at once, before the watch echoes it."""
        if self.index.apply(snap, revision):
            self._indexed(snap["id"])

    def _on_bucket(self, change: Change) -> None:
        if change.value is None:
            self.index.remove(change.key, change.revision)
        else:
            try:
                snap = json.loads(change.value)
            except ValueError:
                snap = None
            if not isinstance(snap, dict) or snap.get("id") != change.key:
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
        reports: dict[str, list[dict[str, Any]]] = {}
        for msg, _ in pulled:
            with contextlib.suppress(ValueError, IndexError):
                reports.setdefault(msg.subject.split(".")[1], []).append(json.loads(msg.data))
        reactions = self.tally.take()
        # Spaces with listeners counted but no report this round: let stale edges expire.
        quiet = [s for s, n in self.counted.items() if n and s not in reports]
        now = time.time()
        for space in set(reports) | set(reactions) | set(quiet):
            got, counts = reports.get(space, []), reactions.get(space, Counter())

            def change(s: dict[str, Any], got: list[dict[str, Any]] = got,
                       counts: Counter[str] = counts) -> dict[str, Any]:
                return fold(s, got, counts, now)

            with contextlib.suppress(NotFound):
                snap = await self.store.mutate(space, change)
                self.counted[space] = int(snap.get("listeners", 0))
        for _, ack in pulled:
            with contextlib.suppress(Exception):
                await ack()

    async def _on_edge(self, msg: Message) -> None:
        with contextlib.suppress(ValueError):
            self.registry.update(json.loads(msg.data), time.time())

    async def start(self) -> None:
        # The watch's initial values build the index: one pass at startup, none after.
        self._watch = await self.ctx.bus.kv_watch(subjects.SPACES_BUCKET, self._on_bucket)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._watch.ready.wait(), 30)
        await self.ctx.bus.subscribe(subjects.EDGES, self._on_edge)
        self._tasks += [asyncio.ensure_future(self._flush_loop()),
                        asyncio.ensure_future(self._tally_loop()),
                        asyncio.ensure_future(self._expire_loop())]

    async def stop(self) -> None:
        while not self._outbox.empty():
            await self._publish(self._outbox.get_nowait())
        for snap in self.coalescer.due(float("inf")):
            await self._publish(snap)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch is not None:
            await self._watch.stop()


# A public Space's snapshot as an anonymous client sees it: a CDN or reverse proxy may keep
# it briefly and serve it stale while refreshing (viewers' state comes from the socket).
SHARED_CACHE = "public, max-age=2, s-maxage=2, stale-while-revalidate=10"


def _etag_response(request: Request, snap: dict[str, Any], *, shared: bool) -> Response:
    """The snapshot with ETag = version; ``shared`` when any cache may keep it (a public
    Space, asked without a token), else ``private, no-store``."""
    etag = f'"{snap["version"]}"'
    headers = {"ETag": etag, "Cache-Control": SHARED_CACHE if shared else "private, no-store",
               "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return JSONResponse(public_view(snap), headers=headers)


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /api/v1 on ``app``."""
    api = Api(ctx)
    ctx.on_start.append(api.start)
    ctx.on_stop.append(api.stop)
    router = APIRouter(prefix="/api/v1", tags=["spaces"])
    app.state.api = api

    def ok(status: int, model: type, what: str, *errors: int) -> dict[str, Any]:
        """Route options that document the answer and every problem it may give."""
        responses: dict[int | str, dict[str, Any]] = {status: {"model": model,
                                                               "description": what}}
        return {"status_code": status, "response_model": None,
                "responses": responses | problems(*errors)}

    @router.post("/sessions", **ok(201, Session, "a guest token", 400, 403, 413, 422, 429))
    async def create_session(request: Request, body: SessionIn) -> dict[str, Any]:
        """A guest token for a display name (open mode only; limited per client address)."""
        if not ctx.settings.open_mode:
            raise Forbidden("guest sessions are off on this server; ask for a token",
                            slug="closed")
        check_text(body.name, "name")
        api.guest_limit(request)
        identity = "g-" + secrets.token_hex(6)
        # The address a trusted proxy forwarded (X-Forwarded-For or Forwarded), so that a
        # block sticks to the guest's network, not to the proxy's.
        net = ctx.issuer.net_tag(api.client(request).address) if request.client else None
        token = ctx.issuer.mint(identity, body.name.strip() or identity, role="host",
                                guest=True, net=net)
        return {"token": token, "identity": identity, "name": body.name.strip()}

    @router.get("/me", **ok(200, Me, "the token's identity and grant", 401))
    async def me(request: Request) -> dict[str, Any]:
        """Who the bearer token says you are."""
        ident = api.who(request)
        return {"identity": ident.id, "name": ident.name, "space": ident.space,
                "role": ident.role, "expires": ident.expires, "guest": ident.guest}

    @router.post("/spaces", **ok(201, Snapshot, "the new Space; the caller is its host",
                                 400, 401, 403, 413, 422, 429))
    async def create_space(request: Request, body: SpaceIn) -> dict[str, Any]:
        """Create a Space; the caller is its host."""
        ident = api.who(request)
        grants.authorize(ident, "create", None)
        api.limit(ident)
        api.creation_limit(ident, request)
        start = body.scheduled_start.isoformat() if body.scheduled_start else None
        snap = rules.create(rules.new_space_id(), api.actor(ident),
                            title=body.title, description=body.description,
                            scheduled_start=start, private=body.private,
                            signed_in_only=body.signed_in_only, record=body.record,
                            now=time.time())
        await api.store.create(snap)
        return public_view(snap)

    @router.get("/spaces", **ok(
        200, SpaceList, "a page of Spaces; `next` is the cursor of the following page",
        400, 401, 422, 503))
    async def list_spaces(request: Request, state: str | None = None,
                          limit: int = LIST_LIMIT, cursor: str | None = None
                          ) -> dict[str, Any]:
        """Live Spaces (most listeners first), then scheduled ones (soonest first); one
        state with ?state=, ended ones newest first. Paged: pass ``next`` as ?cursor=."""
        if state not in (None, *STATES):
            raise Unprocessable("state is one of live, scheduled, ended", slug="bad-state")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise BadInput(f"limit is 1 to {LIST_LIMIT_MAX}", slug="bad-parameters")
        if cursor is not None and len(cursor) > 512:
            raise BadInput("cursor is not one this server gave out", slug="bad-parameters")
        ident = api.maybe_who(request)
        if not api.listing_ready:
            raise Unavailable("the Space list is still loading", retry_after=1,
                              slug="list-loading")
        viewer = Viewer(ident.id, ident.space) if ident else Viewer()
        spaces, after = api.index.page(
            (state,) if state else ("live", "scheduled"), cursor, limit, viewer,
            admits=lambda item: grants.allows(ident, "read", item.access))
        return {"spaces": spaces, "next": after}

    get_one = ok(200, Snapshot, "the snapshot; ETag is its version", 401, 404)
    get_one["responses"][304] = {"description": "unchanged since If-None-Match"}

    @router.get("/spaces/{space}", **get_one)
    async def get_space(space: str, request: Request) -> Response:
        """The Space's snapshot; cacheable (ETag = version)."""
        ident = api.maybe_who(request)
        snap = await api.authorized(space, ident)
        return _etag_response(request, snap, shared=ident is None and not snap.get("private"))

    async def host_change(space: str, request: Request, what: str) -> dict[str, Any]:
        ident = api.who(request)
        api.limit(ident)
        actor = api.actor(ident)
        change = rules.start if what == "start" else rules.end

        def checked(s: dict[str, Any]) -> dict[str, Any]:
            grants.authorize(ident, "host", s)  # on the very document being changed
            return change(s, actor, now=time.time())

        snap = await api.store.mutate(space, checked)
        if what == "end":
            await ctx.bus.publish(subjects.control(space), b'{"type":"ended"}')
        return public_view(snap)

    @router.post("/spaces/{space}/start", **ok(200, Snapshot, "the live Space",
                                               401, 403, 404, 409, 429, 503))
    async def start_space(space: str, request: Request) -> dict[str, Any]:
        """Go live (host only)."""
        return await host_change(space, request, "start")

    @router.post("/spaces/{space}/end", **ok(200, Snapshot, "the ended Space",
                                             401, 403, 404, 409, 429, 503))
    async def end_space(space: str, request: Request) -> dict[str, Any]:
        """End the Space for everyone (host only)."""
        return await host_change(space, request, "end")

    @router.post("/spaces/{space}/actions", **ok(
        200, Snapshot, "the Space after the action",
        400, 401, 403, 404, 409, 413, 422, 429, 503))
    async def act(space: str, request: Request, body: ActionIn) -> dict[str, Any]:
        """Requests to speak, invitations, the stage, co-hosts, mutes and removals."""
        ident = api.who(request)
        api.limit(ident)
        actor = api.actor(ident)
        needs = grants.for_rule(body.action, body.identity, ident.id)

        def checked(s: dict[str, Any]) -> dict[str, Any]:
            # An unknown action is the rules' 400, but only to those who may see the Space.
            grants.authorize(ident, needs if body.action in rules.ACTIONS else "read", s)
            return rules.apply(s, actor, body.action, target=body.identity, name=body.name,
                               block=body.block, now=time.time())

        try:
            snap = await api.store.mutate(space, checked)
        except Exception:
            ACTIONS_DONE.labels(body.action if body.action in rules.ACTIONS else "unknown",
                                "refused").inc()
            raise
        ACTIONS_DONE.labels(body.action, "done").inc()
        # Out of a private Space means out of its audio too, not only at the next join.
        shut_out = (body.action == "disallow" and snap.get("private") and body.identity
                    and not grants.member(snap, body.identity))
        if (body.action == "remove" and body.identity) or shut_out:
            kick = {"type": "kick", "identity": body.identity, "block": body.block}
            await ctx.bus.publish(subjects.control(space), json.dumps(kick).encode())
        return public_view(snap)

    @router.post("/spaces/{space}/reactions", **ok(
        202, Accepted, "counted; the totals appear in the snapshot within a second or two",
        400, 401, 403, 404, 409, 413, 422, 429))
    async def react(space: str, request: Request, body: ReactionIn) -> dict[str, Any]:
        """A reaction (anyone who may listen; limited per identity, else per address);
        summed with everyone else's and published as totals."""
        ident = api.maybe_who(request)
        if body.emoji not in REACTIONS:
            raise Unprocessable(f"reactions are one of {' '.join(REACTIONS)}",
                                slug="unknown-reaction")
        api._throttle(api.reacts, ident.id if ident else api.client_key(request),
                      "slow down: too many reactions from you")
        snap = await api.authorized(space, ident, "react")
        if snap["state"] != "live":
            raise Conflict("the Space is not live", slug="not-live")
        api.tally.add(space, body.emoji)
        REACTIONS_IN.inc()
        return {"accepted": True}

    @router.get("/spaces/{space}/listen", **ok(200, Listen, "where to listen", 401, 404))
    async def listen(space: str, request: Request) -> dict[str, Any]:
        """Where to listen: the edges serving this Space, least loaded first."""
        snap = await api.authorized(space, api.maybe_who(request))
        now = time.time()
        edges = rank_edges(space, snap.get("_edges", {}), api.registry.fresh(now), now)
        if not edges and "edge" in ctx.settings.roles:
            edges = rank_edges(space, {}, {ctx.settings.node_id: {
                "url": ctx.settings.public_url or None, "listeners": 0, "capacity": None}},
                now)
        if edges and "edge" not in ctx.settings.roles:
            # This process serves no /ws: the top-level answer is the best edge, not a
            # same-origin path that would 404 here.
            return {"ws": edges[0]["ws"], "ogg": edges[0]["ogg"], "edges": edges}
        return {"ws": f"/ws/{space}", "ogg": f"/listen/{space}.opus", "edges": edges}

    app.include_router(router)
