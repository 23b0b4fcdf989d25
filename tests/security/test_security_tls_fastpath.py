"""The fan-out's direct sends never touch a TLS connection's socket.

The fast path sends chunks with ``socket.send`` on the transport's descriptor. Under TLS
those bytes would skip the encryption and reach the client as plaintext inside an
encrypted connection, so a TLS transport must give the fan-out no socket (it is then
written through ``transport.write``, which encrypts).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from tests.certs import make_ca
from townhall.edge.fanout import direct_socket


class Keep(asyncio.Protocol):
    """Hands the server side's transport to the test."""

    def __init__(self, got: asyncio.Future[asyncio.BaseTransport]) -> None:
        self.got = got

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.got.done():
            self.got.set_result(transport)


Connect = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@asynccontextmanager
async def server_side(server_ssl: ssl.SSLContext | None,
                      connect: Connect) -> AsyncIterator[asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[asyncio.BaseTransport] = loop.create_future()
    server = await loop.create_server(lambda: Keep(got), "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.wait_for(connect(port), 10)
    try:
        yield await asyncio.wait_for(got, 10)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_a_tls_transport_gives_the_fan_out_no_socket(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path, ["localhost"], ["127.0.0.1"])
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    client_ssl = ssl.create_default_context(cafile=str(ca))

    def connect(port: int) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        return asyncio.open_connection("127.0.0.1", port, ssl=client_ssl,
                                       server_hostname="localhost")

    async with server_side(server_ssl, connect) as transport:
        # the hazard is real: the TLS transport does expose its raw socket
        assert transport.get_extra_info("socket") is not None
        assert direct_socket(transport) is None


async def test_a_plain_transport_gives_its_own_descriptor() -> None:
    def connect(port: int) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        return asyncio.open_connection("127.0.0.1", port)

    async with server_side(None, connect) as transport:
        sock = direct_socket(transport)
        assert sock is not None
        try:
            assert sock.fileno() == transport.get_extra_info("socket").fileno()
        finally:
            sock.detach()  # the descriptor is the transport's to close
