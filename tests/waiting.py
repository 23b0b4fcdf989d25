"""Waiting on a condition with a bound, never on the clock: the one copy the tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


def until(check: Callable[[], T | None], bound_s: float, what: str,
          every_s: float = 0.1) -> T:
    """Return ``check()``'s first truthy value; fail after ``bound_s`` saying ``what`` was
    awaited."""
    deadline = time.monotonic() + bound_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {bound_s}s: {what}")
        time.sleep(every_s)


@overload
async def until_async(check: Callable[[], Awaitable[T | None]], bound_s: float, what: str,
                      every_s: float = 0.05) -> T: ...


@overload
async def until_async(check: Callable[[], T | None], bound_s: float, what: str,
                      every_s: float = 0.05) -> T: ...


async def until_async(check: Callable[[], object], bound_s: float, what: str,
                      every_s: float = 0.05) -> object:
    """As ``until``, on the event loop; ``check`` may be a plain or an async function."""
    deadline = time.monotonic() + bound_s
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {bound_s}s: {what}")
        await asyncio.sleep(every_s)
