"""Which client address a request counts under, behind trusted proxies; no I/O.

uvicorn already replaces the peer with the address a trusted proxy forwards in
``X-Forwarded-For`` (``forwarded_allow_ips``). This adds RFC 7239 ``Forwarded`` for
proxies that send only that, and says whether the request is this machine's own: a
loopback peer that forwards for someone else is that someone, never exempt.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")


def parse_networks(spec: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or plain addresses) to networks; ValueError on anything else."""
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in spec if s.strip())


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(value: str, trusted: tuple[Network, ...]) -> bool:
    ip = _ip(value)
    return ip is not None and any(ip in net for net in trusted)


def forwarded_for(header: str) -> list[str]:
    """The ``for=`` nodes of an RFC 7239 ``Forwarded`` header, nearest client first,
    without quotes, brackets or ports."""
    out = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.strip().lower() != "for" or not value:
                continue
            node = value.strip().strip('"')
            if node.startswith("["):          # "[2001:db8::1]:4711"
                node = node[1:].partition("]")[0]
            elif node.count(":") == 1:        # "192.0.2.60:4711"
                node = node.partition(":")[0]
            out.append(node)
    return out


@dataclass(frozen=True)
class ClientAddress:
    """The address a request counts under, and whether it is this machine itself."""

    address: str
    local: bool


def client_address(peer: str, headers: Mapping[str, str],
                   trusted: tuple[Network, ...]) -> ClientAddress:
    """``peer`` as uvicorn left it; ``headers`` lower-case names."""
    address = peer
    forwarded = headers.get("forwarded")
    if forwarded and _trusted(peer, trusted):
        # The rightmost node a trusted proxy did not add is the client (RFC 7239 s. 7.4).
        nodes = forwarded_for(forwarded)
        untrusted = [n for n in nodes if not _trusted(n, trusted)]
        if untrusted:
            address = untrusted[-1]
        elif nodes:
            address = nodes[0]
    proxied = bool(forwarded or headers.get("x-forwarded-for"))
    ip = _ip(address)
    return ClientAddress(address, local=not proxied and ip is not None and ip.is_loopback)
