"""The ICE settings applied to aiortc peer connections (the stage's and ``townhall speak``'s).

Always an explicit configuration: given no servers, aiortc falls back to a third-party
STUN server (stun.l.google.com) that nobody chose; an empty list means no servers at all.

aiortc and aioice have no option for the UDP ports of host candidates, so ``bind_in_range``
replaces one aioice method on each of a connection's ICE agents: it binds host sockets by
trying the ports of the range in turn (bounded by the range's size), asks the STUN server
(if any) from those sockets, and leaves TURN allocations to aioice unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any

from aioice import ice as aioice_ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

log = logging.getLogger(__name__)


def rtc_configuration(servers: list[dict[str, Any]], *,
                      relay_only: bool = False) -> RTCConfiguration:
    """aiortc's configuration for RTCIceServer dictionaries (as GET /api/v1/ice answers)."""
    ice_servers = [RTCIceServer(urls=list(s["urls"]), username=s.get("username"),
                                credential=s.get("credential")) for s in servers]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=ice_servers, iceTransportPolicy=policy)


def ice_agents(pc: RTCPeerConnection) -> list[Any]:
    """The aioice connections of ``pc``'s transports (they exist once a remote offer or a
    local transceiver made them, before gathering starts)."""
    agents: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is not None:
            agent = dtls.transport.iceGatherer._connection
            agents[id(agent)] = agent
    return list(agents.values())


async def bind_port(address: str, ports: tuple[int, int],
                    factory: Any) -> tuple[asyncio.DatagramTransport, Any] | None:
    """A UDP endpoint on ``address`` at a free port of ``ports`` (tried from a random
    start, each at most once), or None when all are taken."""
    loop = asyncio.get_running_loop()
    low, high = ports
    count = high - low + 1
    start = random.randrange(count)
    for i in range(count):
        port = low + (start + i) % count
        try:
            return await loop.create_datagram_endpoint(factory, local_addr=(address, port))
        except OSError:
            continue
    return None


def bind_in_range(pc: RTCPeerConnection, ports: tuple[int, int]) -> None:
    """Make ``pc`` gather its host (and server-reflexive) candidates on ports in ``ports``."""
    for agent in ice_agents(pc):
        agent.get_component_candidates = _gatherer(agent, ports,
                                                   agent.get_component_candidates)


def _gatherer(agent: Any, ports: tuple[int, int], relayed: Any) -> Any:
    async def gather(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:
        candidates: list[Any] = []
        hosts = []
        for address in addresses:
            bound = await bind_port(address, ports, lambda: aioice_ice.StunProtocol(agent))
            if bound is None:
                log.warning("no free UDP port in %d-%d on %s", *ports, address)
                continue
            transport, protocol = bound
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                aioice_ice.turn.UDP_SOCKET_BUFFER_SIZE)
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component,
                transport="udp", priority=candidate_priority(component, "host"),
                host=host, port=port, type="host")
            candidates.append(protocol.local_candidate)
            hosts.append(protocol)
        agent._protocols += hosts
        relay = asyncio.ensure_future(relayed(component, [], timeout))
        if agent.stun_server:
            queries = [aioice_ice.server_reflexive_candidate(p, agent.stun_server)
                       for p in hosts if ":" not in p.local_candidate.host]
            for result in await asyncio.gather(
                    *(asyncio.wait_for(q, timeout) for q in queries), return_exceptions=True):
                if isinstance(result, tuple):
                    candidates.append(result[0])
        # Given no addresses, aioice gathers only its TURN relay candidate (if any).
        return candidates + list(await relay)

    return gather
