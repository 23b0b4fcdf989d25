"""A tab's HTTP/1.1 client against a tiny loopback server: keep-alive, and a kept-alive
connection the server closed in between is retried on a fresh one (as browsers do)."""

from __future__ import annotations

import asyncio

import pytest

from townhall.storm.tabhttp import FetchError, TabHttp


async def _server(close_after: int) -> tuple[asyncio.Server, list[int], list[bytes]]:
    """Answers GETs with their path; closes each connection after close_after answers."""
    conns: list[int] = []
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        for _ in range(close_after):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            path = head.split(b" ", 2)[1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"1\"\r\n\r\n%s"
                         % (len(path), path))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, conns, seen


async def test_keep_alive_reuses_one_connection() -> None:
    server, conns, seen = await _server(close_after=3)
    port = server.sockets[0].getsockname()[1]
    tab = TabHttp(timeout=5)
    async with server:
        for path in ("/s/a", "/static/app.js?v=1", "/api/v1/spaces/a"):
            r = await tab.get(f"http://127.0.0.1:{port}{path}", {"If-None-Match": '"0"'})
            assert (r.status, r.body, r.headers["etag"]) == (200, path.encode(), '"1"')
        tab.close()
    assert len(conns) == 1
    assert b"GET /static/app.js?v=1 HTTP/1.1" in seen[1]
    assert b'if-none-match: "0"' in seen[2].lower()


async def test_a_connection_closed_while_idle_is_retried_once() -> None:
    server, conns, _ = await _server(close_after=1)
    port = server.sockets[0].getsockname()[1]
    tab = TabHttp(timeout=5)
    async with server:
        assert (await tab.get(f"http://127.0.0.1:{port}/one")).body == b"/one"
        await asyncio.sleep(0)  # the server has closed it; the tab does not know yet
        assert (await tab.get(f"http://127.0.0.1:{port}/two")).body == b"/two"
        tab.close()
    assert len(conns) == 2


async def test_nothing_listening_is_a_fetch_error() -> None:
    from townhall.bus.embedded import free_port

    with pytest.raises(FetchError):
        await TabHttp(timeout=5).get(f"http://127.0.0.1:{free_port()}/s/a")


async def test_stale_idle_connections_are_all_dropped_after_one_fails() -> None:
    server, conns, _ = await _server(close_after=1)
    port = server.sockets[0].getsockname()[1]
    tab = TabHttp(timeout=5)
    base = f"http://127.0.0.1:{port}"
    async with server:
        await asyncio.gather(*(tab.get(f"{base}/{i}") for i in range(3)))  # 3 now idle
        await asyncio.sleep(0)  # ...and all closed by the server
        assert (await tab.get(f"{base}/again")).body == b"/again"
        tab.close()
    assert len(conns) == 4  # one stale connection tried, then a fresh one
