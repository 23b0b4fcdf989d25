"""Which address a request counts under, behind trusted proxies."""

from __future__ import annotations

import pytest

from townhall.api.clientaddr import (
    LOOPBACK,
    ClientAddress,
    client_address,
    forwarded_for,
    parse_networks,
)

TRUSTED = parse_networks([*LOOPBACK, "10.0.0.0/8"])


def test_forwarded_nodes_lose_quotes_brackets_and_ports() -> None:
    header = 'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711", ' \
             'for=198.51.100.2:80, for=unknown'
    assert forwarded_for(header) == ["192.0.2.60", "2001:db8:cafe::17", "198.51.100.2",
                                     "unknown"]


@pytest.mark.parametrize(("peer", "headers", "want"), [
    # This machine, unproxied: its own (not limited).
    ("127.0.0.1", {}, ClientAddress("127.0.0.1", local=True)),
    # A same-host proxy forwarding a remote client is that client, never exempt.
    ("127.0.0.1", {"forwarded": "for=203.0.113.7"}, ClientAddress("203.0.113.7", False)),
    ("127.0.0.1", {"forwarded": "for=203.0.113.7, for=10.1.2.3"},
     ClientAddress("203.0.113.7", False)),
    # uvicorn already replaced the peer from X-Forwarded-For.
    ("203.0.113.9", {"x-forwarded-for": "203.0.113.9"}, ClientAddress("203.0.113.9", False)),
    # A proxied loopback client is counted (under its address), not waved through.
    ("127.0.0.1", {"x-forwarded-for": "127.0.0.1"}, ClientAddress("127.0.0.1", False)),
    # An untrusted peer's Forwarded is not believed.
    ("198.51.100.1", {"forwarded": "for=203.0.113.7"}, ClientAddress("198.51.100.1", False)),
    ("192.0.2.1", {}, ClientAddress("192.0.2.1", False)),
])
def test_client_address(peer: str, headers: dict[str, str], want: ClientAddress) -> None:
    assert client_address(peer, headers, TRUSTED) == want


def test_bad_networks_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
