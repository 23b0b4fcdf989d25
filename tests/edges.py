"""A chunk producer and WebSocket listeners for tests that watch an edge: the producer
publishes a 440 Hz tone as Chunks on ``townhall.<id>.media`` like the stage does; a listener
records the hello, the text frames and the chunks' sequence numbers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Served
from tests.tone import ToneChunks
from townhall.bus import Bus, subjects
from townhall.media.chunk import Chunk

CHUNK_S = 0.1


def ws_base(served: Served) -> str:
    """The server's base URL for WebSockets."""
    return served.url.replace("http://", "ws://")


def live_space(served: Served, title: str = "edge test", private: bool = False
               ) -> tuple[str, str]:
    """A live Space created through the api; returns (id, host token)."""
    token = served.session("host")
    return served.live_space(token, title, private=private), token


class Producer:
    """Publishes tone chunks every ``interval`` seconds until stopped."""

    def __init__(self, bus: Bus, space: str, interval: float = CHUNK_S) -> None:
        self.bus = bus
        self.space = space
        self.interval = interval
        self.tone = ToneChunks(440.0)
        self.last = 0
        self._task: asyncio.Task[None] | None = None

    async def publish(self, n: int = 1, gap: float = 0.0) -> None:
        for _ in range(n):
            if gap:
                await asyncio.sleep(gap)
            chunk = self.tone.next()
            await self.bus.publish(subjects.media(self.space), chunk.encode())
            self.last = chunk.seq

    async def _run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.bus.flush()


class Listener:
    """A WebSocket listener recording hello, text frames and chunk sequence numbers."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self.texts: list[dict[str, Any]] = []
        self.seqs: list[int] = []

    @classmethod
    async def open(cls, url: str) -> Listener:
        ws = await connect(url, open_timeout=30)
        self = cls(ws)
        self.hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert self.hello["type"] == "hello"
        return self

    async def until(self, seq: int, timeout: float = 60) -> None:
        """Read until a chunk with sequence >= ``seq`` arrived."""
        async with asyncio.timeout(timeout):
            while not self.seqs or self.seqs[-1] < seq:
                msg = await self.ws.recv()
                if isinstance(msg, bytes):
                    self.seqs.append(Chunk.decode(msg).seq)
                else:
                    self.texts.append(json.loads(msg))


def contiguous(seqs: list[int]) -> bool:
    """Each sequence number once, in order, none skipped."""
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def metric(served: Served, name: str) -> float:
    """A /metrics family's value, summed over its labels."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{served.url}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))
