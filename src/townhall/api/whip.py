"""WHIP (RFC 9725) endpoints on the api's HTTP server, forwarded to the owning stage.

The api checks what it can without media (token, Space live, caller on stage, an SDP that
offers Opus audio within the bounds of townhall.sdp), takes the offer from the
caller's and the Space's budgets, and hands it over NATS to whichever stage holds the
Space's lease; that stage answers with the SDP answer and a session id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import FastAPI, Request, Response

from townhall import grants
from townhall.api.ratelimit import TokenBuckets
from townhall.api.schemas import problems
from townhall.api.store import SpaceStore
from townhall.bus import Bus, subjects
from townhall.bus.bus import UNREACHABLE, Message
from townhall.bus.messages import (
    MessageError,
    WhipLeave,
    WhipOffer,
    WhipReply,
    WhipRequest,
    decode_whip_reply,
    encode,
)
from townhall.context import Context
from townhall.ice import link_headers
from townhall.problems import (
    BY_STATUS,
    Conflict,
    NotAllowed,
    NotFound,
    Problem,
    TooMany,
    Unavailable,
)
from townhall.room.rules import is_space_id
from townhall.sdp import check_sdp
from townhall.sessionid import is_session_id

log = logging.getLogger(__name__)
T = TypeVar("T")


# Offers that reach a stage, per identity and per Space. A speaker sends one per connection
# (a reconnect after a network change or a stage takeover sends another); a Space's whole
# stage (13 people) may reconnect at once after a takeover. Refused offers cost the stage
# nothing, so they are not counted.
IDENTITY_RATE, IDENTITY_BURST = 0.5, 10.0
SPACE_RATE, SPACE_BURST = 1.0, 20.0
LEASE_CHECK_S = 1.0  # how often a pending offer checks its stage still holds the lease
WHIP_READ_S = 2.0    # an offer's reads of the Space and its lease (503 bus-unavailable after)

# What each problem means on the WHIP routes (OpenAPI descriptions).
WHIP_WHY = {
    400: "the body is not an SDP offer",
    403: "not on this Space's stage, blocked, a token for another Space, or a token whose "
         "role is below speaker",
    404: "no such Space, or no such WHIP session",
    405: "PATCH: no trickle ICE or ICE restart; POST a complete offer again",
    409: "the Space is not live",
    413: "the offer is over 32 KiB, 1,024 lines or 1,024 characters a line "
         "(sdp-too-large)",
    422: "the offer has no audio, no Opus, or more than 4 media sections (too-many-media)",
    429: "too many offers from you or to this Space (rate-limited); see Retry-After",
    503: "no stage holds the Space right now (e.g. during a stage failover), or the "
         "stage is busy; see Retry-After",
}


def check_offer(body: bytes) -> str:
    """The offer as text, or a precise refusal (see townhall.sdp)."""
    return check_sdp(body)


@dataclass
class OfferBudget:
    """How many offers may go to a stage, per identity and per Space (time passed in)."""

    identities: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(rate=IDENTITY_RATE, burst=IDENTITY_BURST))
    spaces: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(rate=SPACE_RATE, burst=SPACE_BURST))

    def take(self, identity: str, space: str, now: float) -> None:
        """Count one offer, or raise TooMany (429 rate-limited) with the wait."""
        wait = self.identities.take(identity, now)
        if wait > 0:
            raise TooMany("too many WHIP offers from you; wait and retry",
                          retry_after=wait, slug="rate-limited")
        wait = self.spaces.take(space, now)
        if wait > 0:
            raise TooMany("too many WHIP offers to this Space; wait and retry",
                          retry_after=wait, slug="rate-limited")


def stage_refusal(reply: WhipReply) -> Problem | None:
    """The problem a stage's reply stands for, or None when it succeeded. Only statuses
    and texts the stage chose reach the client; anything else is a generic 500."""
    if reply.ok:
        return None
    slug = reply.slug or "stage-refused"
    if reply.status == 503:
        return Unavailable(reply.detail, retry_after=reply.retry_after or 1.0, slug=slug)
    if reply.status in BY_STATUS:
        return BY_STATUS[reply.status](reply.detail, slug=slug)
    log.error("stage answered a WHIP request with %s: %s", reply.status, reply.detail)
    return Problem("an internal error occurred; nothing was changed")


async def while_held(bus: Bus, space: str, holder: bytes,
                     ask: Awaitable[Message]) -> Message:
    """The stage's reply, unless the lease stops naming ``holder`` first: a stage cut
    off or dead answers nothing, and the offer would wait out the whole 15 s while
    another stage takes the Space over (the speaker then came back that much later)."""
    reply = asyncio.ensure_future(ask)
    try:
        while True:
            done, _ = await asyncio.wait([reply], timeout=LEASE_CHECK_S)
            if done:
                return reply.result()
            with contextlib.suppress(*UNREACHABLE):  # no answer: keep waiting
                lease = await asyncio.wait_for(
                    bus.kv_get(subjects.LEASES_BUCKET, space), LEASE_CHECK_S)
                if lease is None or lease.value != holder:
                    raise Unavailable("the stage holding this Space changed; retry",
                                      retry_after=1, slug="no-stage")
    finally:
        reply.cancel()


async def bounded_read(read: Awaitable[T], space: str, what: str) -> T:
    """An offer's read, at most WHIP_READ_S (then 503 bus-unavailable, by the app's
    handler); the log says which read it was, since a failover's timeline needs it."""
    try:
        return await asyncio.wait_for(read, WHIP_READ_S)
    except TimeoutError:
        log.warning("a WHIP offer's read of the %s went unanswered for %g s", what,
                    WHIP_READ_S, extra={"space": space})
        raise


def install(app: FastAPI, ctx: Context) -> None:
    """Mount POST /whip/{space} and DELETE /whip/{space}/{session}."""
    store = SpaceStore(ctx.bus)
    budget = OfferBudget()
    ice = ctx.settings.ice()

    async def ask_stage(space: str, request: WhipRequest,
                        holder: bytes | None = None) -> WhipReply:
        leaving = isinstance(request, WhipLeave)
        ask = ctx.bus.request(subjects.whip(space), encode(request),
                              timeout=3 if leaving else 15)
        try:
            msg = await (ask if holder is None else while_held(ctx.bus, space, holder, ask))
        except TimeoutError as exc:
            if leaving:  # no stage runs the Space any more: the session is gone already
                raise NotFound("no such WHIP session", slug="no-session") from exc
            raise Unavailable("no stage holds this Space right now; retry shortly",
                              retry_after=2, slug="no-stage") from exc
        try:
            reply = decode_whip_reply(msg.data)
        except MessageError:
            log.error("unreadable WHIP reply from the stage", extra={"space": space})
            raise Problem("an internal error occurred; nothing was changed") from None
        refusal = stage_refusal(reply)
        if refusal is not None:
            raise refusal
        return reply

    @app.post("/whip/{space}", status_code=201, tags=["whip"], response_class=Response,
              responses={201: {"description": "the SDP answer; Location names the session, "
                                              "Link headers the ICE servers",
                               "content": {"application/sdp": {}}},
                         **problems(400, 401, 403, 404, 409, 413, 422, 429, 503, why=WHIP_WHY)})
    async def whip_publish(space: str, request: Request) -> Response:
        """Go live: an SDP offer in (application/sdp), the SDP answer out."""
        ident = ctx.issuer.from_header(request.headers.get("authorization"))
        # Who may publish is settled before a byte of the offer is looked at.
        # Bounded well below --nats-timeout: in a failover these reads can go unanswered
        # while raft elects (10 s a time, seen), and the speaker is better off asking again.
        snap = await bounded_read(store.get(space), space, "Space")
        grants.authorize(ident, "publish", snap)
        sdp = check_offer(await request.body())
        if snap.state != "live":
            raise Conflict("the Space is not live", slug="not-live")
        lease = await bounded_read(ctx.bus.kv_get(subjects.LEASES_BUCKET, space), space,
                                   "lease")
        if lease is None:
            # No stage holds the Space (none running, or the owner died and its lease ran
            # out): say so at once rather than after the request's timeout, so a speaker's
            # client retries while another stage takes the Space over.
            raise Unavailable("no stage holds this Space right now; retry shortly",
                              retry_after=1, slug="no-stage")
        budget.take(ident.id, space, time.monotonic())
        offer = WhipOffer(ident.id, ident.name, sdp, version=snap.version)
        reply = await ask_stage(space, offer, holder=lease.value)
        location = f"/whip/{space}/{reply.session}"
        response = Response(reply.sdp or "", status_code=201, media_type="application/sdp",
                            headers={"Location": location})
        for link in link_headers(ice.servers(ident.id, time.time())):  # RFC 9725 §4.6
            response.headers.append("Link", link)
        return response

    @app.delete("/whip/{space}/{session}", tags=["whip"], response_class=Response,
                responses=problems(401, 403, 404, why=WHIP_WHY))
    async def whip_leave(space: str, session: str, request: Request) -> Response:
        """Stop publishing."""
        ident = ctx.issuer.from_header(request.headers.get("authorization"))
        # Both parts end up in a NATS subject or message: only the shapes townhall mints.
        if not is_space_id(space):
            raise NotFound("no such Space", slug="space-not-found")
        if not is_session_id(session):
            raise NotFound("no such WHIP session", slug="no-session")
        grants.authorize(ident, "unpublish", await store.get(space))
        await ask_stage(space, WhipLeave(ident.id, session))
        return Response(status_code=200)

    @app.patch("/whip/{space}/{session}", tags=["whip"], response_class=Response,
               responses=problems(405, why=WHIP_WHY))
    async def whip_patch(space: str, session: str) -> Response:
        """Trickle ICE and ICE restarts (RFC 9725 §4.3): not supported, always 405."""
        # The stage answers with every candidate gathered (non-trickle); a client whose
        # path broke gets a new one, through TURN if need be, from a complete new offer.
        raise NotAllowed("this server does not take trickle ICE or ICE restarts: send a "
                         "complete offer (all candidates) in a new POST /whip/<space>",
                         allow="DELETE", slug="whip-patch-unsupported")
