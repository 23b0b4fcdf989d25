"""A chunk's store ack that comes late does not hold the next chunks back from listeners.

While a healed NATS node rejoins, the ``MEDIA`` stream's leader answers a publish about a
second late; the owner used to wait for that ack before sending the next chunk, so every
listener heard a second of silence and then a burst. Now the chunks coming due go out at
their pace, fenced on the same stored sequence, and the late ack's answer alone decides:
stored, the owner carries on fenced on it; refused, the owner was deposed and stops.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tests.fakebus import FakeBus
from tests.snapshots import space
from tests.waiting import until_async
from townhall.bus import Message, subjects
from townhall.media.chunk import Chunk
from townhall.media.packager import Packager
from townhall.stage.role import ACK_LATE_S, SpaceRun, ack_late

SUBJECT = subjects.media("sp1")
BOUND_S = 5.0


class LateAckBus(FakeBus):
    """The stream answers fenced publishes in order, the first one only once released;
    plain subscribers get each chunk the moment it is published, as on NATS."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.order = asyncio.Lock()
        self.sent: list[tuple[int, int]] = []   # (chunk seq, fence) as published
        self.first = True

    async def publish_fenced(self, subject: str, data: bytes, last_seq: int, *,
                             timeout: float = 1.0) -> int:
        self.sent.append((Chunk.decode(data).seq, last_seq))
        async with self.order:
            if self.first:
                self.first = False
                await self.release.wait()
            return await super().publish_fenced(subject, data, last_seq, timeout=timeout)


def chunk(seq: int) -> bytes:
    return Chunk(seq, seq * 4800, 1_000_000 + seq, (b"\xf8\xff\xfe",)).encode()


async def until(check: Any) -> None:
    await until_async(check, BOUND_S, "the sender")


def owner(bus: LateAckBus, fenced: list[str]) -> SpaceRun:
    run = SpaceRun(cast(Any, bus), "sp1", space(), Packager(), stored_seq=0,
                   on_fenced=fenced.append)
    run.claimed = True  # past the takeover's first chunk (tested in test_stage_numbering)
    return run


def test_an_ack_is_late_only_past_the_bound() -> None:
    assert not ack_late(0.0)
    assert not ack_late(ACK_LATE_S / 2)  # a loaded machine's slow ack: the next chunk waits
    assert ack_late(ACK_LATE_S)
    assert ack_late(1.0)


async def test_chunks_keep_their_pace_while_an_ack_is_late_then_fence_on_it() -> None:
    bus, fenced = LateAckBus(), list[str]()
    run = owner(bus, fenced)
    sender = asyncio.ensure_future(run.send_chunks())
    try:
        run.chunks.put_nowait(chunk(1))
        await until(lambda: len(bus.sent) == 1)
        for seq in (2, 3, 4):
            run.chunks.put_nowait(chunk(seq))
        # Before: the sender waited for chunk 1's ack and the others never went out.
        await until(lambda: len(bus.sent) == 4)
        assert bus.sent == [(1, 0), (2, 0), (3, 0), (4, 0)]  # all on the same fence
        ahead = run.ahead()
        assert ahead is not None and ahead.seq == 4  # heard, maybe not stored: reported
        bus.release.set()
        await until(lambda: run.kept == 1)
        run.chunks.put_nowait(chunk(5))
        await until(lambda: len(bus.sent) == 5)
        assert bus.sent[-1] == (5, 1)  # fenced on chunk 1, stored as the stream's 1st
        await until(lambda: len(bus.stored) == 2)
        assert [Chunk.decode(m.data).seq for _, m in bus.stored] == [1, 5]  # none twice
        assert not run.fenced and fenced == []
    finally:
        sender.cancel()


async def test_a_late_refusal_still_stops_a_deposed_owner() -> None:
    bus, fenced = LateAckBus(), list[str]()
    # Another stage took the Space over and stored a chunk of its own meanwhile.
    bus.stored.append((0.0, Message(SUBJECT, chunk(100), {})))
    run = owner(bus, fenced)
    sender = asyncio.ensure_future(run.send_chunks())
    run.chunks.put_nowait(chunk(1))
    await until(lambda: len(bus.sent) == 1)
    run.chunks.put_nowait(chunk(2))
    await until(lambda: len(bus.sent) == 2)
    bus.release.set()
    async with asyncio.timeout(BOUND_S):
        await sender
    assert run.fenced and fenced == ["sp1"]
    run.chunks.put_nowait(chunk(3))
    assert len(bus.sent) == 2  # stopped at its first refused store
    assert [Chunk.decode(m.data).seq for _, m in bus.stored] == [100]
