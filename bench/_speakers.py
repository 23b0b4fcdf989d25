"""Speakers and a listener for benchmarks on a live Space: bring people on stage, publish
over WHIP (an in-process aiortc peer, or `townhall speak` processes), hear the chunks."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription

from townhall.client import whip
from townhall.media.chunk import Chunk

LEASE_TRIES = 30  # × 0.5 s: a fresh stage answers 503 until it holds the Space's lease


def bring_on_stage(url: str, space: str, host: str, names: list[str]) -> list[str]:
    """A fresh guest per name, invited by the host, accepts; their tokens."""
    tokens = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for name in names:
            who = c.post("/api/v1/sessions", json={"name": name}).json()
            c.post(f"/api/v1/spaces/{space}/actions", headers={"Authorization": f"Bearer {host}"},
                   json={"action": "invite", "identity": who["identity"],
                         "name": name}).raise_for_status()
            c.post(f"/api/v1/spaces/{space}/actions",
                   headers={"Authorization": f"Bearer {who['token']}"},
                   json={"action": "accept"}).raise_for_status()
            tokens.append(str(who["token"]))
    return tokens


def spawn_tone_speaker(url: str, space: str, token: str, hz: float, seconds: float,
                       log: Path | None = None) -> subprocess.Popen[bytes]:
    """`townhall speak --tone hz` for ``seconds`` (stderr to ``log``, or discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "townhall", "speak", "--url", url, "--space", space,
         "--token", token, "--tone", f"{hz:g}", "--seconds", f"{seconds:g}"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb") if log is not None else subprocess.DEVNULL)


async def whip_publish(pc: RTCPeerConnection, url: str, space: str, token: str) -> None:
    """Offer ``pc``'s tracks to the Space's stage over WHIP as ``token``; apply the answer."""
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=20) as http:
        r = await whip.offer(http, f"{url}/whip/{space}", token, pc.localDescription.sdp,
                             tries=LEASE_TRIES)
        r.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))


@contextlib.asynccontextmanager
async def chunks_heard(url: str, space: str,
                       on_chunk: Callable[[Chunk, float], None]) -> AsyncIterator[None]:
    """Listen on the Space's WebSocket while inside: ``on_chunk(chunk, arrival wall clock)``."""
    ws_url = url.replace("http", "ws", 1) + f"/ws/{space}"
    async with websockets.connect(ws_url, max_size=2**20) as ws:

        async def collect() -> None:
            async for frame in ws:
                if isinstance(frame, bytes):
                    on_chunk(Chunk.decode(frame), time.time())

        reader = asyncio.ensure_future(collect())
        try:
            yield
        finally:
            reader.cancel()
