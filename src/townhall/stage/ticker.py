"""One 20 ms timer for every Space a stage process mixes.

A task per Space woke the event loop 50 times a second per Space, each wake-up an asyncio
timer, a task step and a sleep; with a hundred Spaces that was 5,000 wake-ups a second
before any audio work. One ticker per event loop sleeps once per frame and steps every
joined Space in turn, each measured against the same due time (a Space stepped later in
the frame counts that wait as lateness: it is what its listeners get).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)
FRAME_S = 0.020
STALL_S = 1.0  # a loop stalled this long re-anchors the clock rather than bursting


class Clocked(Protocol):
    """What the ticker steps: one frame, told how late it runs; messages to publish after."""

    def tick(self, late_s: float) -> list[tuple[str, bytes]]:
        """Run one frame ``late_s`` after it was due; the messages to publish after."""
        ...

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish one message a tick returned."""
        ...


class Ticker:
    """Steps every member once per frame from one task; members join and leave any time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, frame_s: float = FRAME_S) -> None:
        self.loop = loop
        self.frame_s = frame_s
        self.members: dict[Clocked, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def join(self, member: Clocked) -> asyncio.Future[None]:
        """Step ``member`` from the next frame on. The future fails with what its tick
        raised (the member is dropped); cancelling it, or ``leave``, ends its steps."""
        done: asyncio.Future[None] = self.loop.create_future()
        self.members[member] = done
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run())
        return done

    def leave(self, member: Clocked) -> None:
        """Stop stepping ``member`` (idempotent)."""
        done = self.members.pop(member, None)
        if done is not None and not done.done():
            done.cancel()

    async def _run(self) -> None:
        start, tick = time.monotonic(), 0
        while self.members:
            tick += 1
            due = start + tick * self.frame_s
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() - due > STALL_S:  # the loop stalled: re-anchor, don't burst
                start, tick = time.monotonic(), 0
            sends: list[tuple[Clocked, str, bytes]] = []
            for member, done in list(self.members.items()):
                if done.done():
                    self.members.pop(member, None)
                    continue
                try:
                    for subject, data in member.tick(time.monotonic() - due):
                        sends.append((member, subject, data))
                except Exception as exc:  # one Space's failure stops that Space only
                    log.exception("a Space's mixer tick failed")
                    self.members.pop(member, None)
                    done.set_exception(exc)
            for member, subject, data in sends:  # after every Space had its frame
                try:
                    await member.publish(subject, data)
                except Exception:
                    log.warning("could not publish %s", subject, exc_info=True)
        if _tickers.get(id(self.loop)) is self:
            del _tickers[id(self.loop)]


_tickers: dict[int, Ticker] = {}


def ticker() -> Ticker:
    """The running event loop's ticker."""
    loop = asyncio.get_running_loop()
    found = _tickers.get(id(loop))
    if found is None or found.loop is not loop:
        found = _tickers[id(loop)] = Ticker(loop)
    return found
