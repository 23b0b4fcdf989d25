"""Waiting on a condition with a bound, never on the clock: the one copy the tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def until(check: Callable[[], object], bound_s: float, what: str,
          every_s: float = 0.1) -> None:
    """Return once ``check()`` is truthy; fail after ``bound_s`` saying ``what`` was awaited."""
    deadline = time.monotonic() + bound_s
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {bound_s}s: {what}")
        time.sleep(every_s)


async def until_async(check: Callable[[], object | Awaitable[object]], bound_s: float,
                      what: str, every_s: float = 0.05) -> None:
    """As ``until``, on the event loop; ``check`` may be a plain or an async function."""
    deadline = time.monotonic() + bound_s
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {bound_s}s: {what}")
        await asyncio.sleep(every_s)
