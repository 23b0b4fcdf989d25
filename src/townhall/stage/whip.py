"""WHIP (RFC 9725) endpoints on the api's HTTP server, forwarded to the owning stage.

The api checks what it can without media (token, Space live, caller on stage, an SDP that
offers Opus audio) and hands the offer over NATS to whichever stage holds the Space's
lease; that stage answers with the SDP answer and a session id.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI, Request, Response

from townhall import grants
from townhall.api.schemas import problems
from townhall.bus import subjects
from townhall.context import Context
from townhall.ice import link_headers
from townhall.problems import (
    BadInput,
    Conflict,
    Forbidden,
    NotAllowed,
    NotFound,
    Problem,
    Unavailable,
    Unprocessable,
)
from townhall.room.store import SpaceStore

STATUS: dict[int, type[Problem]] = {403: Forbidden, 404: NotFound, 409: Conflict,
                                    422: Unprocessable}

# What each problem means on the WHIP routes (OpenAPI descriptions).
WHIP_WHY = {
    400: "the body is not an SDP offer",
    403: "not on this Space's stage, blocked, a token for another Space, or a token whose "
         "role is below speaker",
    404: "no such Space, or no such WHIP session",
    405: "PATCH: no trickle ICE or ICE restart; POST a complete offer again",
    409: "the Space is not live",
    422: "the offer has no audio, or no Opus",
    503: "no stage holds the Space right now (e.g. during a stage failover); see "
         "Retry-After",
}


def check_offer(body: bytes) -> str:
    """The offer as text, or a precise refusal."""
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("the SDP offer is not UTF-8 text", slug="bad-sdp") from exc
    if not sdp.startswith("v=0"):
        raise BadInput("the body is not an SDP offer (it must start with v=0)", slug="bad-sdp")
    if "m=audio" not in sdp:
        raise Unprocessable("the offer has no audio", slug="no-audio")
    if "opus/48000" not in sdp.lower():
        raise Unprocessable("the offer does not offer Opus audio", slug="no-opus")
    return sdp


def install(app: FastAPI, ctx: Context) -> None:
    """Mount POST /whip/{space} and DELETE /whip/{space}/{session}."""
    store = SpaceStore(ctx.bus)
    ice = ctx.settings.ice()

    async def ask_stage(space: str, payload: dict[str, object]) -> dict[str, object]:
        leaving = payload.get("op") == "leave"
        try:
            msg = await ctx.bus.request(subjects.whip(space), json.dumps(payload).encode(),
                                        timeout=3 if leaving else 15)
        except TimeoutError as exc:
            if leaving:  # no stage runs the Space any more: the session is gone already
                raise NotFound("no such WHIP session", slug="no-session") from exc
            raise Unavailable("no stage holds this Space right now; retry shortly",
                              retry_after=2, slug="no-stage") from exc
        reply: dict[str, object] = json.loads(msg.data)
        status = int(str(reply.get("status", 500)))
        if status in STATUS:
            raise STATUS[status](str(reply.get("detail", "")), slug="stage-refused")
        return reply

    @app.post("/whip/{space}", status_code=201, tags=["whip"], response_class=Response,
              responses={201: {"description": "the SDP answer; Location names the session, "
                                              "Link headers the ICE servers",
                               "content": {"application/sdp": {}}},
                         **problems(400, 401, 403, 404, 409, 413, 422, 503, why=WHIP_WHY)})
    async def whip_publish(space: str, request: Request) -> Response:
        """Go live: an SDP offer in (application/sdp), the SDP answer out."""
        ident = ctx.issuer.from_header(request.headers.get("authorization"))
        # Who may publish is settled before a byte of the offer is looked at.
        snap = await store.get(space)
        grants.authorize(ident, "publish", snap)
        sdp = check_offer(await request.body())
        if snap["state"] != "live":
            raise Conflict("the Space is not live", slug="not-live")
        if await ctx.bus.kv_get(subjects.LEASES_BUCKET, space) is None:
            # No stage holds the Space (none running, or the owner died and its lease ran
            # out): say so at once rather than after the request's timeout, so a speaker's
            # client retries while another stage takes the Space over.
            raise Unavailable("no stage holds this Space right now; retry shortly",
                              retry_after=1, slug="no-stage")
        reply = await ask_stage(space, {"identity": ident.id, "name": ident.name, "sdp": sdp})
        location = f"/whip/{space}/{reply['session']}"
        response = Response(str(reply["sdp"]), status_code=201, media_type="application/sdp",
                            headers={"Location": location})
        for link in link_headers(ice.servers(ident.id, time.time())):  # RFC 9725 §4.6
            response.headers.append("Link", link)
        return response

    @app.delete("/whip/{space}/{session}", tags=["whip"], response_class=Response,
                responses=problems(401, 403, 404, why=WHIP_WHY))
    async def whip_leave(space: str, session: str, request: Request) -> Response:
        """Stop publishing."""
        ident = ctx.issuer.from_header(request.headers.get("authorization"))
        grants.authorize(ident, "unpublish", await store.get(space))
        await ask_stage(space, {"op": "leave", "identity": ident.id, "session": session})
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
