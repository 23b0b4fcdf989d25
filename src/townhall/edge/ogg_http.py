"""``GET /listen/{space}.opus``: Icecast-style continuous Ogg/Opus over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from townhall.edge import direct
from townhall.edge.hub import Subscriber
from townhall.edge.node import EdgeNode, may_listen, token_identity
from townhall.problems import Forbidden, NotFound, Problem, Unauthorized, Unavailable


class Gone(Problem):
    """The Space has ended."""

    status = 410


class OggResponse(StreamingResponse):
    """A streaming response that keeps its ASGI ``send`` (to find the socket under it)."""

    asgi_send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.asgi_send = send
        await super().__call__(scope, receive, send)


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
        try:
            await edge.hub.join(space, sub, None, snap)
        finally:
            edge.joined()

        response: OggResponse

        async def pages() -> AsyncIterator[bytes]:
            # ``busy`` stays set while a yielded piece is on its way through ASGI (uvicorn
            # may wait for the socket to drain before writing it), so that no direct
            # write overtakes it.
            try:
                sub.busy = True
                yield edge.hub.ogg.headers
                # The headers went out (chunked, if HTTP/1.1): pages may now be written
                # straight to the socket while this listener keeps up.
                if direct.enabled():
                    sub.direct = direct.DirectWriter.for_chunked_http(response.asgi_send)
                while sub.close is None:
                    sub.busy = False
                    await sub.wait()
                    sub.busy = True
                    sub.texts.clear()  # state and levels do not travel in Ogg
                    sub.skip()         # a skip is just a page-number jump for Ogg readers
                    frame = sub.next_frame()
                    if frame is not None:
                        yield frame.ogg
            finally:
                sub.direct = None
                edge.hub.leave(space, sub)

        response = OggResponse(pages(), media_type="audio/ogg",
                               headers={"Cache-Control": "no-store",
                                        "X-Content-Type-Options": "nosniff"})
        return response
