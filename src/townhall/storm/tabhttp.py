"""A browser tab's HTTP/1.1 connections: keep-alive, up to 6 per origin, h11 as the parser.

Each simulated viewer holds its own connections, as a browser does, so the server sees
as many keep-alive connections as there are open pages; a small client also keeps the
load generator's cost per request low next to a shared pool of thousands of connections.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

PER_ORIGIN = 6  # browsers open at most 6 HTTP/1.1 connections per origin
READ = 65536


class FetchError(OSError):
    """The request got no complete answer (connection refused, closed or unparsable)."""


@dataclass
class Response:
    """Status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.used = False  # served a request before: the server may have closed it since

    async def request(self, host: str, target: str, headers: dict[str, str]) -> Response:
        out = [("Host", host), ("User-Agent", "townhall-storm"), ("Accept", "*/*"),
               *headers.items()]
        self.writer.write(self.h11.send(h11.Request(method="GET", target=target,
                                                    headers=out)) or b"")
        self.writer.write(self.h11.send(h11.EndOfMessage()) or b"")
        await self.writer.drain()
        status, got, body = 0, {}, bytearray()
        while True:
            ev = self.h11.next_event()
            if ev is h11.NEED_DATA:
                data = await self.reader.read(READ)
                if not data and status == 0:
                    raise FetchError("connection closed before a response")
                self.h11.receive_data(data)
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                got = {k.decode().lower(): v.decode("latin-1") for k, v in ev.headers}
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return Response(status, got, bytes(body))
            elif isinstance(ev, h11.ConnectionClosed):
                raise FetchError("connection closed mid-response")

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.used = True
            return True
        return False

    def close(self) -> None:
        self.writer.close()


@dataclass
class TabHttp:
    """One tab's connections; GETs absolute URLs over them."""

    timeout: float = 15.0
    _idle: dict[tuple[str, str, int], list[_Conn]] = field(default_factory=dict)
    _slots: dict[tuple[str, str, int], asyncio.Semaphore] = field(default_factory=dict)

    async def get(self, url: str, headers: dict[str, str] | None = None) -> Response:
        """GET url; a kept-alive connection the server closed meanwhile is retried once."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname or "", port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc
        slot = self._slots.setdefault(origin, asyncio.Semaphore(PER_ORIGIN))
        async with slot:
            for _ in range(2):
                conn = await self._conn(origin)
                try:
                    resp = await asyncio.wait_for(conn.request(host, target, headers or {}),
                                                  self.timeout)
                except (FetchError, ConnectionError, h11.ProtocolError) as exc:
                    conn.close()
                    if conn.used:
                        # The server closed an idle keep-alive; the others idle as long
                        # are likely closed too: drop them and go on a fresh one.
                        for idle in self._idle.pop(origin, []):
                            idle.close()
                        continue
                    raise FetchError(f"{type(exc).__name__}") from exc
                except BaseException:
                    conn.close()
                    raise
                if conn.reusable():
                    self._idle.setdefault(origin, []).append(conn)
                else:
                    conn.close()
                return resp
        raise FetchError("no answer on a fresh connection either")

    async def _conn(self, origin: tuple[str, str, int]) -> _Conn:
        idle = self._idle.get(origin)
        if idle:
            return idle.pop()
        scheme, host, port = origin
        ctx = ssl.create_default_context() if scheme == "https" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, limit=READ), self.timeout)
        except OSError as exc:
            raise FetchError(f"connect: {type(exc).__name__}") from exc
        return _Conn(reader, writer)

    def close(self) -> None:
        """Close every connection (the tab is closed)."""
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
