"""The stage's peer connection and its ICE settings, with real aiortc peers on this
machine: no STUN server nobody configured, host ports inside --rtc-ports, and the public
address announced in the answer."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aioice import ice as aioice_ice
from aiortc import RTCPeerConnection, RTCSessionDescription

from townhall.ice import IceConfig
from townhall.stage.ingest import SpeakerSession
from townhall.stage.rtc import rtc_configuration

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def stun_queries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every STUN server aioice would ask for a server-reflexive candidate (none is asked:
    the query fails here, before anything is sent)."""
    asked: list[tuple[str, int]] = []

    async def record(protocol: Any, server: tuple[str, int]) -> Any:
        asked.append(server)
        raise ConnectionError("no STUN in this test")

    monkeypatch.setattr(aioice_ice, "server_reflexive_candidate", record)
    return asked


async def offer_sdp(pc: RTCPeerConnection) -> str:
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def host_candidates(sdp: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in
            re.finditer(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp)]


async def test_nothing_configured_asks_no_stun_server(stun_queries: list[Any]) -> None:
    speaker = RTCPeerConnection(rtc_configuration([]))
    session = SpeakerSession("ada", "Ada")
    try:
        answer = await session.answer(await offer_sdp(speaker))
    finally:
        await session.close()
        await speaker.close()
    assert stun_queries == []
    assert "typ srflx" not in answer and host_candidates(answer)
    # What the stage did before: aiortc's defaults ask Google's STUN server.
    default = RTCPeerConnection()
    try:
        await offer_sdp(default)
    finally:
        await default.close()
    assert stun_queries == [("stun.l.google.com", 19302)]


def bind_everywhere(port: int) -> list[socket.socket]:
    """UDP sockets holding ``port`` on every IPv4 and IPv6 address."""
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        v4.bind(("0.0.0.0", port))
        v6.bind(("::", port))
    except OSError:
        v4.close()
        v6.close()
        raise
    return [v4, v6]


def free_udp_run(length: int) -> int:
    """The first port of ``length`` consecutive UDP ports free on every address."""
    for base in range(42_000, 60_000, 97):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + length):
                socks += bind_everywhere(port)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free run of UDP ports")


@pytest.fixture
def taken() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


async def test_host_candidates_stay_in_the_port_range_and_connect(
        taken: list[socket.socket]) -> None:
    base = free_udp_run(4)
    for port in (base, base + 1):  # the range's first ports are busy: the stage moves on
        taken += bind_everywhere(port)
    speaker = RTCPeerConnection(rtc_configuration([]))
    session = SpeakerSession("ada", "Ada", IceConfig(rtc_ports=(base, base + 3)))
    connected = asyncio.Event()

    @speaker.on("connectionstatechange")
    def on_state() -> None:
        if speaker.connectionState == "connected":
            connected.set()

    try:
        answer = await session.answer(await offer_sdp(speaker))
        hosts = host_candidates(answer)
        assert hosts and {port for _, port in hosts} <= {base + 2, base + 3}, answer
        await speaker.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(connected.wait(), 20)
    finally:
        await session.close()
        await speaker.close()


async def test_public_ip_is_announced_in_the_answer() -> None:
    speaker = RTCPeerConnection(rtc_configuration([]))
    session = SpeakerSession("ada", "Ada", IceConfig(public_ip="203.0.113.9"))
    try:
        answer = await session.answer(await offer_sdp(speaker))
    finally:
        await session.close()
        await speaker.close()
    v4 = [host for host, _ in host_candidates(answer) if ":" not in host]
    assert v4 and set(v4) == {"203.0.113.9"}, answer


async def test_an_encoders_video_is_declined_and_its_audio_taken() -> None:
    encoder = RTCPeerConnection(rtc_configuration([]))  # as OBS offers: audio and video
    encoder.addTransceiver("audio", direction="sendonly")
    encoder.addTransceiver("video", direction="sendonly")
    session = SpeakerSession("obs", "OBS")
    try:
        await encoder.setLocalDescription(await encoder.createOffer())
        answer = await session.answer(encoder.localDescription.sdp)
    finally:
        await session.close()
        await encoder.close()
    audio, video = answer.split("m=video")
    assert "m=audio" in audio and "a=recvonly" in audio
    assert "a=inactive" in video and "a=recvonly" not in video
