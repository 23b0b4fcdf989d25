"""TLS to NATS: a process given the CA (and, where the server asks, a client certificate)
connects over TLS to a nats-server with a test CA; one without it is refused."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from tests.certs import ThrowawayCA
from townhall.bus import Bus
from townhall.bus.embedded import free_port, nats_server_binary, wait_for_port
from townhall.bus.tls import NatsTls
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(60)


def start_tls_server(tmp: Path, ca: ThrowawayCA, *, verify_clients: bool
                     ) -> Iterator[str]:
    server = ca.issue("nats-1", client=False)
    port = free_port()
    tls = {"cert_file": str(server.cert), "key_file": str(server.key),
           "ca_file": str(ca.path), "verify": verify_clients, "timeout": 2}
    conf = tmp / "nats.conf"
    conf.write_text(json.dumps({"host": "127.0.0.1", "port": port, "tls": tls,
                                "jetstream": {"store_dir": str(tmp / "js")}}))
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 15, proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc, 10)


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path / "ca")


@pytest.fixture
def tls_url(tmp_path: Path, ca: ThrowawayCA) -> Iterator[str]:
    yield from start_tls_server(tmp_path, ca, verify_clients=False)


@pytest.fixture
def mtls_url(tmp_path: Path, ca: ThrowawayCA) -> Iterator[str]:
    yield from start_tls_server(tmp_path, ca, verify_clients=True)


async def refused(url: str, **options: object) -> Exception:
    """Connect once, no retries; return what refused it."""
    try:
        nc = await asyncio.wait_for(nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
            **options), 10)  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    await nc.close()
    raise AssertionError(f"connected to {url} with {options}")


async def test_a_client_with_the_ca_connects_over_tls(tls_url: str, ca: ThrowawayCA) -> None:
    bus = await Bus.connect([tls_url], tls=NatsTls(ca=ca.path))
    try:
        assert bus.connected
        seq = await bus.publish_durable("townhall.abcdefghij.media", b"chunk")
        assert seq == 1
    finally:
        await bus.close()


async def test_a_client_without_the_ca_is_refused(tls_url: str, tmp_path: Path) -> None:
    # No TLS options (the server's INFO makes nats-py try TLS with the system's CAs), the
    # system's CAs, another CA: the server's certificate does not verify.
    other = ThrowawayCA(tmp_path / "other")
    for options in ({}, {"tls": ssl.create_default_context()},
                    {"tls": NatsTls(ca=other.path).context()}):
        exc = await refused(tls_url, **options)
        assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)


async def test_a_server_that_verifies_clients_wants_their_certificate(
        mtls_url: str, ca: ThrowawayCA) -> None:
    exc = await refused(mtls_url, tls=NatsTls(ca=ca.path).context())
    # The server ends the handshake: the client's side sees the connection go.
    assert isinstance(exc, ConnectionError | ssl.SSLError | nats.errors.Error), repr(exc)
    mine = ca.issue("api-1", server=False)
    bus = await Bus.connect([mtls_url], tls=NatsTls(ca=ca.path, cert=mine.cert, key=mine.key))
    try:
        assert bus.connected
    finally:
        await bus.close()
