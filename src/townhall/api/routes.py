"""The api role's HTTP routes under /api/v1: sessions, Spaces, stage actions, reactions,
where to listen.

Module-level routes on one router; each takes the process's ``Api`` (townhall.api.role)
as a dependency and reads the caller's token itself, so a malformed body is still refused
before the token is looked at, as it always was.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter as PromCounter

from townhall import grants
from townhall.api.models import ActionIn, ReactionIn, SessionIn, SpaceIn
from townhall.api.role import Api
from townhall.api.schemas import Accepted, Listen, Me, Session, Snapshot, SpaceList, problems
from townhall.bus import subjects
from townhall.bus.messages import Kick, SpaceEnded, encode
from townhall.context import Context
from townhall.problems import BadInput, Conflict, Forbidden, Unavailable, Unprocessable
from townhall.room import rules
from townhall.room.counting import rank_edges
from townhall.room.index import STATES, Viewer
from townhall.room.snapshot import REACTIONS, Space, public_view
from townhall.room.text import check_text

ACTIONS_DONE = PromCounter("townhall_actions_total", "Stage and moderation actions",
                           ["action", "outcome"])
REACTIONS_IN = PromCounter("townhall_reactions_received_total", "Reactions taken by the api")
LIST_LIMIT, LIST_LIMIT_MAX = 50, 100
# A public Space's snapshot as an anonymous client sees it: a CDN or reverse proxy may keep
# it briefly and serve it stale while refreshing (viewers' state comes from the socket).
SHARED_CACHE = "public, max-age=2, s-maxage=2, stale-while-revalidate=10"

router = APIRouter(prefix="/api/v1", tags=["spaces"])


def install(app: FastAPI, ctx: Context) -> None:
    """Mount /api/v1 on ``app``, with this process's ``Api`` (``app.state.api``)."""
    api = Api(ctx)
    ctx.on_start.append(api.start)
    ctx.on_stop.append(api.stop)
    app.state.api = api
    app.include_router(router)


def the_api(request: Request) -> Api:
    """The process's Api, as install() left it on the app."""
    api: Api = request.app.state.api
    return api


ApiDep = Annotated[Api, Depends(the_api)]


def ok(status: int, model: type, what: str, *errors: int) -> dict[str, Any]:
    """Route options that document the answer and every problem it may give."""
    responses: dict[int | str, dict[str, Any]] = {status: {"model": model, "description": what}}
    return {"status_code": status, "response_model": None,
            "responses": responses | problems(*errors)}


def etag_response(request: Request, snap: Space, *, shared: bool) -> Response:
    """The snapshot with ETag = version; ``shared`` when any cache may keep it (a public
    Space, asked without a token), else ``private, no-store``."""
    etag = f'"{snap.version}"'
    headers = {"ETag": etag, "Cache-Control": SHARED_CACHE if shared else "private, no-store",
               "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return JSONResponse(public_view(snap), headers=headers)


@router.post("/sessions", **ok(201, Session, "a guest token", 400, 403, 413, 422, 429))
async def create_session(request: Request, body: SessionIn, api: ApiDep) -> dict[str, Any]:
    """A guest token for a display name (open mode only; limited per client address)."""
    ctx = api.ctx
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
async def me(request: Request, api: ApiDep) -> dict[str, Any]:
    """Who the bearer token says you are."""
    ident = api.who(request)
    return {"identity": ident.id, "name": ident.name, "space": ident.space,
            "role": ident.role, "expires": ident.expires, "guest": ident.guest}


@router.post("/spaces", **ok(201, Snapshot, "the new Space; the caller is its host",
                             400, 401, 403, 413, 422, 429))
async def create_space(request: Request, body: SpaceIn, api: ApiDep) -> dict[str, Any]:
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
async def list_spaces(request: Request, api: ApiDep, state: str | None = None,
                      limit: int = LIST_LIMIT, cursor: str | None = None) -> dict[str, Any]:
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
        admits=lambda item: item.access is not None and grants.allows(ident, "read",
                                                                      item.access))
    return {"spaces": spaces, "next": after}


_GET_ONE = ok(200, Snapshot, "the snapshot; ETag is its version", 401, 404)
_GET_ONE["responses"][304] = {"description": "unchanged since If-None-Match"}


@router.get("/spaces/{space}", **_GET_ONE)
async def get_space(space: str, request: Request, api: ApiDep) -> Response:
    """The Space's snapshot; cacheable (ETag = version)."""
    ident = api.maybe_who(request)
    snap = await api.authorized(space, ident)
    return etag_response(request, snap, shared=ident is None and not snap.private)


async def host_change(api: Api, space: str, request: Request, what: str) -> dict[str, Any]:
    """Start or end the Space, as its host, on the very document being changed."""
    ident = api.who(request)
    api.limit(ident)
    actor = api.actor(ident)
    change = rules.start if what == "start" else rules.end

    def checked(s: Space) -> Space:
        grants.authorize(ident, "host", s)
        return change(s, actor, now=time.time())

    snap = await api.store.mutate(space, checked)
    if what == "end":
        await api.ctx.bus.publish(subjects.control(space), encode(SpaceEnded()))
    return public_view(snap)


@router.post("/spaces/{space}/start", **ok(200, Snapshot, "the live Space",
                                           401, 403, 404, 409, 429, 503))
async def start_space(space: str, request: Request, api: ApiDep) -> dict[str, Any]:
    """Go live (host only)."""
    return await host_change(api, space, request, "start")


@router.post("/spaces/{space}/end", **ok(200, Snapshot, "the ended Space",
                                         401, 403, 404, 409, 429, 503))
async def end_space(space: str, request: Request, api: ApiDep) -> dict[str, Any]:
    """End the Space for everyone (host only)."""
    return await host_change(api, space, request, "end")


@router.post("/spaces/{space}/actions", **ok(
    200, Snapshot, "the Space after the action",
    400, 401, 403, 404, 409, 413, 422, 429, 503))
async def act(space: str, request: Request, body: ActionIn, api: ApiDep) -> dict[str, Any]:
    """Requests to speak, invitations, the stage, co-hosts, mutes and removals."""
    ident = api.who(request)
    api.limit(ident)
    actor = api.actor(ident)
    needs = grants.for_rule(body.action, body.identity, ident.id)

    def checked(s: Space) -> Space:
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
    shut_out = (body.action == "disallow" and snap.private and body.identity
                and not grants.member(snap, body.identity))
    if body.identity and (body.action == "remove" or shut_out):
        kick = Kick(body.identity, block=body.block)
        await api.ctx.bus.publish(subjects.control(space), encode(kick))
    return public_view(snap)


@router.post("/spaces/{space}/reactions", **ok(
    202, Accepted, "counted; the totals appear in the snapshot within a second or two",
    400, 401, 403, 404, 409, 413, 422, 429))
async def react(space: str, request: Request, body: ReactionIn, api: ApiDep
                ) -> dict[str, Any]:
    """A reaction (anyone who may listen; limited per identity, else per address);
    summed with everyone else's and published as totals."""
    ident = api.maybe_who(request)
    if body.emoji not in REACTIONS:
        raise Unprocessable(f"reactions are one of {' '.join(REACTIONS)}",
                            slug="unknown-reaction")
    api.reaction_limit(ident.id if ident else api.client_key(request))
    snap = await api.authorized(space, ident, "react")
    if snap.state != "live":
        raise Conflict("the Space is not live", slug="not-live")
    api.tally.add(space, body.emoji)
    REACTIONS_IN.inc()
    return {"accepted": True}


@router.get("/spaces/{space}/listen", **ok(200, Listen, "where to listen", 401, 404))
async def listen(space: str, request: Request, api: ApiDep) -> dict[str, Any]:
    """Where to listen: the edges serving this Space, least loaded first."""
    settings = api.ctx.settings
    snap = await api.authorized(space, api.maybe_who(request))
    now = time.time()
    edges = rank_edges(space, snap.edges, api.registry.fresh(now), now)
    if not edges and "edge" in settings.roles:
        edges = rank_edges(space, {}, {settings.node_id: {
            "url": settings.public_url or None, "listeners": 0, "capacity": None}}, now)
    if edges and "edge" not in settings.roles:
        # This process serves no /ws: the top-level answer is the best edge, not a
        # same-origin path that would 404 here.
        return {"ws": edges[0]["ws"], "ogg": edges[0]["ogg"], "edges": edges}
    return {"ws": f"/ws/{space}", "ogg": f"/listen/{space}.opus", "edges": edges}
