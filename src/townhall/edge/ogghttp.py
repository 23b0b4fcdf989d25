"""``GET /listen/<space>.opus`` as a raw asyncio protocol: the Ogg/Opus stream over plain
HTTP, Icecast style (docs/protocol.md)."""

from __future__ import annotations

from townhall.edge.connection import ListenerConnection
from townhall.edge.feed import Joined
from townhall.edge.gate import Refusal
from townhall.edge.wire import CHUNKED_END, http_chunk, http_head, problem_response
from townhall.problems import BY_STATUS, Problem, TooMany, Unavailable


class OggListener(ListenerConnection):
    """``GET /listen/<space>.opus``: 200 audio/ogg, header pages first, then live pages;
    problem+json refusals (404, 410, 401/403, 503 + Retry-After)."""

    kind = "ogg"

    def stream_kind(self) -> str:
        """Chunked pages on HTTP/1.1; bare pages (delimited by the close) on HTTP/1.0."""
        # HTTP/1.0 has no chunked encoding: the pages go as they are, the close ends it.
        return "ogg" if self.request.http_version == "1.1" else "ogg_raw"

    def start_stream(self, joined: Joined) -> bytes:
        """The 200 response head and the Ogg header pages."""
        chunked = self.stream_kind() == "ogg"
        headers = {"content-type": "audio/ogg", "cache-control": "no-store",
                   "x-content-type-options": "nosniff"}
        if chunked:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["connection"] = "close"
        ogg_headers = self.edge.hub.ogg.headers
        return (http_head(200, headers, self.request.http_version)
                + (http_chunk(ogg_headers) if chunked else ogg_headers))

    def _answer(self, problem: Problem) -> None:
        self.closing = True
        self.transport.write(problem_response(problem, self.request.http_version))
        self.transport.close()

    def refuse(self, refusal: Refusal) -> None:
        """Answer the refusal's status as problem+json and close."""
        self._answer(BY_STATUS[refusal.status](refusal.detail, slug=refusal.slug))

    def full(self, retry_after: int) -> None:
        """503 edge-full with Retry-After, and close."""
        self._answer(Unavailable("this edge is full; retry later", slug="edge-full",
                                 retry_after=retry_after))

    def too_many(self, retry_after: int) -> None:
        """429 too-many-listeners with Retry-After, and close."""
        self._answer(TooMany("this address holds as many listener connections as an "
                             "edge allows; retry later", slug="too-many-listeners",
                             retry_after=retry_after))

    def finish(self, code: int, reason: str) -> None:
        """End the stream (the chunked body's last piece) and close."""
        if self.closing:
            return
        self.closing = True
        if self.sub is not None:
            self.sub.end(code, reason)
            if self.sub.kind == "ogg" and not self.transport.is_closing():
                self.transport.write(CHUNKED_END)
        self.transport.close()
        self._close_later()

    def data_received(self, data: bytes) -> None:
        """Nothing more is expected from an Ogg listener: ignored."""
        pass  # nothing more is expected from a listener on this connection
