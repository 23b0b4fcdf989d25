"""A WHIP offer's reads of the Space and its lease: asked again when one goes unanswered
(a direct read can land on a NATS node just cut off), bounded, and the lease's holder told
from the stages' heartbeats while the lease read is slow. No NATS: the reads are stubs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from townhall.api import whip
from townhall.api.stageboard import StageBoard
from townhall.bus.bus import Entry
from townhall.bus.messages import StageHeartbeat
from townhall.problems import NotFound

pytestmark = pytest.mark.timeout(30)


def stub(answers: list[Callable[[], Awaitable[object]]]) -> tuple[Callable[[], Awaitable[object]],
                                                                list[int]]:
    """A read whose n-th call behaves as ``answers[n]`` (the last one repeats)."""
    calls = [0]

    def read() -> Awaitable[object]:
        calls[0] += 1
        return answers[min(calls[0], len(answers)) - 1]()
    return read, calls


async def never() -> object:
    await asyncio.Event().wait()
    return None


async def value() -> object:
    return "snapshot"


async def missing() -> object:
    raise NotFound("no Space", slug="space-not-found")


async def test_a_read_unanswered_is_asked_again_and_the_first_answer_wins() -> None:
    read, calls = stub([never, value])
    assert await whip.bounded_read(read, "s1", "Space") == "snapshot"
    assert calls[0] == 2


async def test_a_refusal_is_not_asked_again() -> None:
    read, calls = stub([missing, value])
    with pytest.raises(NotFound):
        await whip.bounded_read(read, "s1", "Space")
    assert calls[0] == 1


async def test_reads_never_answered_end_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whip, "WHIP_READ_S", 1.0)
    read, calls = stub([never])
    with pytest.raises(TimeoutError):
        await whip.bounded_read(read, "s1", "lease")
    assert calls[0] >= 2


class SlowLeases:
    """A bus whose lease reads never answer (a raft election under way)."""

    async def kv_get(self, bucket: str, key: str) -> Entry | None:
        await asyncio.Event().wait()
        return None


async def test_the_heartbeats_stand_in_for_a_slow_lease_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whip, "WHIP_READ_S", 1.0)
    board = StageBoard(listening_since=0.0)
    board.update(StageHeartbeat("stage-b", ["s1"]), now=time.monotonic())
    bus = SlowLeases()
    assert await whip.lease_holder(bus, "s1", board) == b"stage-b"  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):  # no heartbeat names s2's mixer: the read decides
        await whip.lease_holder(bus, "s2", board)  # type: ignore[arg-type]
