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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import FastAPI, Request, Response

from townhall import grants
from townhall.api.ratelimit import TokenBuckets
from townhall.api.schemas import problems
from townhall.api.stageboard import BOARD, SILENT_S, StageBoard
from townhall.api.store import SpaceStore
from townhall.bus import Bus, subjects
from townhall.bus.bus import UNREACHABLE, Entry, Message
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
HEARD_CHECK_S = 0.25  # ...and that its stage's heartbeats still come (no I/O: the board)
WHIP_READ_S = 2.0    # an offer's reads of the Space and its lease (503 bus-unavailable after)
HEDGE_S = 0.4        # a read unanswered this long is sent again (see bounded_read)
# The lease read's bound when the stages' heartbeats name the Space's mixer: the read is
# the authority, but during a raft election it goes unanswered, and the heartbeat (at most
# SILENT_S old) is good enough to ask that stage; a wrong guess costs one 503 no-stage.
LEASE_READ_BOARD_S = 0.5

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
    503: "no stage holds the Space right now (e.g. during a stage failover, or the stage "
         "it was sent to fell silent), or the stage is busy; see Retry-After",
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


def stage_gone(board: StageBoard, holder: bytes, now: float) -> Unavailable | None:
    """503 no-stage when the stage an offer went to has sent no heartbeat for SILENT_S: dead,
    cut off, or its NATS client moving to another node (it never got the request), so the
    speaker retries at once rather than after the request's 15 s."""
    if board.silent_for(holder.decode(errors="replace"), now) <= SILENT_S:
        return None
    return Unavailable("the stage holding this Space stopped answering; retry",
                       retry_after=1, slug="no-stage")


async def while_held(bus: Bus, space: str, holder: bytes, ask: Awaitable[Message],
                     board: StageBoard = BOARD) -> Message:
    """The stage's reply, unless that stage falls silent (no heartbeat for SILENT_S) or the
    lease stops naming ``holder`` first: a stage cut off or dead answers nothing, and the
    offer would wait out the whole 15 s while another stage takes the Space over (the
    speaker then came back that much later)."""
    reply = asyncio.ensure_future(ask)
    lease: asyncio.Future[Entry | None] | None = None  # the lease read under way, if any
    next_read = time.monotonic() + LEASE_CHECK_S
    try:
        while True:
            done, _ = await asyncio.wait([reply], timeout=HEARD_CHECK_S)
            if done:
                return reply.result()
            now = time.monotonic()
            gone = stage_gone(board, holder, now)
            if gone is not None:
                log.info("gave up a WHIP offer: its stage sent no heartbeat for %g s", SILENT_S,
                         extra={"space": space})
                raise gone
            if lease is None and now >= next_read:
                lease = asyncio.ensure_future(bus.kv_get(subjects.LEASES_BUCKET, space))
                next_read = now + LEASE_CHECK_S
            if lease is not None and lease.done():
                read, lease = lease, None
                with contextlib.suppress(*UNREACHABLE):  # no answer: keep waiting
                    entry = read.result()
                    if entry is None or entry.value != holder:
                        raise Unavailable("the stage holding this Space changed; retry",
                                          retry_after=1, slug="no-stage")
            elif lease is not None and now >= next_read:  # unanswered a whole round: drop it
                lease.cancel()
                lease = None
    finally:
        reply.cancel()
        if lease is not None:
            lease.cancel()


async def bounded_read(read: Callable[[], Awaitable[T]], space: str, what: str) -> T:
    """An offer's read, at most WHIP_READ_S (then 503 bus-unavailable, by the app's
    handler); the log says which read it was, since a failover's timeline needs it.

    Reads are direct (any replica answers): one that lands on a NATS node just cut off
    (its routes not yet known dead, ~3 s) is never answered, so a read unanswered for
    HEDGE_S is sent again (to a replica picked anew) and the first answer wins."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WHIP_READ_S
    tries: set[asyncio.Future[T]] = set()
    try:
        while (left := deadline - loop.time()) > 0:
            tries.add(asyncio.ensure_future(read()))
            done, tries = await asyncio.wait(tries, timeout=min(HEDGE_S, left),
                                             return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not isinstance(task.exception(), TimeoutError):
                    return task.result()  # an answer, or a refusal such as NotFound
        log.warning("a WHIP offer's read of the %s went unanswered for %g s", what,
                    WHIP_READ_S, extra={"space": space})
        raise TimeoutError(f"the {what} read")
    finally:
        for task in tries:
            task.cancel()


async def lease_holder(bus: Bus, space: str, board: StageBoard = BOARD) -> bytes | None:
    """Who holds the Space's lease (None: nobody). When the lease read is slow and the
    stages' heartbeats name the Space's mixer, that stage stands in (a raft election
    can hold the read for its whole bound; the heartbeats come over plain NATS)."""
    read = asyncio.ensure_future(
        bounded_read(lambda: bus.kv_get(subjects.LEASES_BUCKET, space), space, "lease"))
    try:
        if board.mixer(space, time.monotonic()) is not None:
            with contextlib.suppress(TimeoutError):
                lease = await asyncio.wait_for(asyncio.shield(read), LEASE_READ_BOARD_S)
                return None if lease is None else lease.value
            mixer = board.mixer(space, time.monotonic())
            if mixer is not None:
                log.info("a WHIP offer's read of the lease was slow: asking %s, which "
                         "mixes the Space by its heartbeat", mixer, extra={"space": space})
                return mixer.encode()
        lease = await read
        return None if lease is None else lease.value
    finally:
        read.cancel()


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
        snap = await bounded_read(lambda: store.get(space), space, "Space")
        grants.authorize(ident, "publish", snap)
        sdp = check_offer(await request.body())
        if snap.state != "live":
            raise Conflict("the Space is not live", slug="not-live")
        holder = await lease_holder(ctx.bus, space)
        if holder is None:
            # No stage holds the Space (none running, or the owner died and its lease ran
            # out): say so at once rather than after the request's timeout, so a speaker's
            # client retries while another stage takes the Space over.
            raise Unavailable("no stage holds this Space right now; retry shortly",
                              retry_after=1, slug="no-stage")
        budget.take(ident.id, space, time.monotonic())
        offer = WhipOffer(ident.id, ident.name, sdp, version=snap.version)
        reply = await ask_stage(space, offer, holder=holder)
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
