"""``GET /listen/{space}.opus``: Icecast-style continuous Ogg/Opus over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.responses import StreamingResponse

from townhall.edge.hub import Subscriber
from townhall.edge.node import EdgeNode, may_listen, token_identity
from townhall.problems import Forbidden, NotFound, Problem, Unauthorized, Unavailable


class Gone(Problem):
    """The Space has ended."""

    status = 410


_BY_STATUS: dict[int, type[Problem]] = {401: Unauthorized, 403: Forbidden, 404: NotFound,
                                        410: Gone}


def install(app: FastAPI, edge: EdgeNode) -> None:
    """Add the Ogg stream route."""

    @app.get("/listen/{space}.opus", response_class=StreamingResponse,
             summary="Continuous Ogg/Opus stream of a live Space",
             responses={200: {"content": {"audio/ogg": {}}}})
    async def listen_ogg(space: str, token: str | None = None) -> StreamingResponse:
        snap = await edge.hub.snapshot(space)
        refusal = may_listen(snap, space, token, edge.issuer)
        if refusal is not None:
            raise _BY_STATUS[refusal.status](refusal.detail, slug=refusal.slug)
        decision = edge.admit()
        if not decision.admitted:
            raise Unavailable("this edge is full; retry later", slug="edge-full",
                              retry_after=decision.retry_after)
        sub = Subscriber("ogg", identity=token_identity(token, edge.issuer))
        await edge.hub.join(space, sub, None, snap)

        async def pages() -> AsyncIterator[bytes]:
            try:
                yield edge.hub.ogg.headers
                while sub.close is None:
                    await sub.wait()
                    sub.texts.clear()  # state and levels do not travel in Ogg
                    sub.skip()         # a skip is just a page-number jump for Ogg readers
                    frame = sub.next_frame()
                    if frame is not None:
                        yield frame.ogg
            finally:
                edge.hub.leave(space, sub)

        return StreamingResponse(pages(), media_type="audio/ogg",
                                 headers={"Cache-Control": "no-store",
                                          "X-Content-Type-Options": "nosniff"})
