"""``GET /api/v1/ice``: the STUN/TURN servers a speaker's peer connection should use, with
TURN credentials minted for the caller and valid until ``expires``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from townhall.api.schemas import problems
from townhall.auth import role_rank
from townhall.context import Context
from townhall.grants import NEEDS
from townhall.problems import Forbidden


class IceServer(BaseModel):
    """One RTCIceServer, in the browser's own shape."""

    urls: list[str]
    username: str | None = Field(None, description="TURN only: <expiry unix s>:<identity>")
    credential: str | None = Field(None, description="TURN only: base64 HMAC-SHA1")


class IceServers(BaseModel):
    """What ``new RTCPeerConnection({iceServers})`` takes; empty when none is configured."""

    iceServers: list[IceServer]  # the WebRTC dictionary's own name
    expires: int = Field(description="unix seconds: fetch again before this")


def install(app: FastAPI, ctx: Context) -> None:
    """Mount GET /api/v1/ice."""
    ice = ctx.settings.ice()

    @app.get("/api/v1/ice", tags=["whip"], response_model=IceServers,
             response_model_exclude_none=True,
             responses=problems(401, 403, why={
                 403: "a listener's token: only those who may speak get TURN credentials"}))
    async def ice_servers(request: Request) -> dict[str, Any]:
        """ICE servers for publishing (WHIP); TURN credentials are minted per call."""
        ident = ctx.issuer.from_header(request.headers.get("authorization"))
        # TURN relays wherever its users ask: credentials only for those who may publish.
        if role_rank(ident.role) < role_rank(NEEDS["publish"]):
            raise Forbidden(f"this token's {ident.role} grant does not allow publishing, "
                            "so it gets no ICE servers", slug="insufficient-grant")
        now = time.time()
        return {"iceServers": ice.servers(ident.id, now), "expires": ice.expires(now)}
