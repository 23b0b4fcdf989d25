"""The stage's one ticker: every Space stepped each frame from one task, a failing Space
stopped alone, messages published after the frame, and the task gone with the last Space."""

from __future__ import annotations

from tests.waiting import until_async
from townhall.stage.ticker import ticker


class Member:
    def __init__(self, fail_at: int = 0) -> None:
        self.ticks = 0
        self.fail_at = fail_at
        self.published: list[tuple[str, bytes]] = []
        self.lateness: list[float] = []

    def tick(self, late_s: float) -> list[tuple[str, bytes]]:
        self.ticks += 1
        self.lateness.append(late_s)
        if self.ticks == self.fail_at:
            raise RuntimeError("this Space's mixer broke")
        return [("levels", bytes([self.ticks % 256]))]

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))


async def test_one_ticker_steps_every_space_and_a_failure_stops_only_that_space() -> None:
    clock = ticker()
    assert ticker() is clock  # one per event loop
    a, b, bad = Member(), Member(), Member(fail_at=3)
    done_a, _, done_bad = clock.join(a), clock.join(b), clock.join(bad)
    await until_async(lambda: a.ticks >= 10 and b.ticks >= 10, 10, "ten frames each")
    assert done_bad.done() and isinstance(done_bad.exception(), RuntimeError)
    assert bad.ticks == 3 and bad not in clock.members
    assert len(a.published) >= a.ticks - 1  # each frame's message, after the frame
    assert all(late >= 0 for late in a.lateness)

    clock.leave(a)
    assert done_a.cancelled()
    left_at = a.ticks
    await until_async(lambda: b.ticks >= left_at + 5, 10, "b goes on without a")
    assert a.ticks == left_at
    clock.leave(b)
    task = clock._task
    assert task is not None
    await until_async(task.done, 5, "the ticker's task ends with its last Space")
    assert ticker() is not clock  # the next Space starts a fresh one
