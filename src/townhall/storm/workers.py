"""Worker processes, each an asyncio loop running many listeners, reporting once a second."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from townhall.storm.backoff import Backoff
from townhall.storm.browser import BrowserWorld, browser_viewer, socket_reactions
from townhall.storm.listener import Events, ogg_listener, ws_listener


@dataclass(frozen=True)
class Plan:
    """What one worker runs: listener indices, when each starts, and until when."""

    worker: int
    base: str
    space: str
    listeners: tuple[int, ...]
    ramp: float
    total: int
    hold_until: float  # seconds after the shared start
    protocol: str  # ws | ogg | mix | browser
    stay: float | None = None  # mean seconds an admitted listener stays (exponential)
    poll_s: float = 0.0  # browser: fetch the snapshot this often while open (0: never)
    reactions: float = 0.0  # browser: this worker's reactions per second over the sockets


def _protocol(plan: Plan, idx: int) -> str:
    if plan.protocol == "mix":
        return "ogg" if idx % 4 == 3 else "ws"  # a quarter on Ogg, like players in the wild
    return plan.protocol


async def _run(plan: Plan, start_wall: float, out: Any) -> None:
    ev = Events()
    t0 = time.monotonic() - (time.time() - start_wall)
    until = t0 + plan.hold_until
    rng = random.Random(plan.worker)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client:
        world = BrowserWorld()

        async def one(idx: int) -> None:
            start_at = t0 + plan.ramp * idx / max(1, plan.total)
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            backoff = Backoff(base=0.5, cap=10, rng=random.Random(rng.random()))
            stay = rng.expovariate(1 / plan.stay) if plan.stay else None
            if plan.protocol == "browser":
                await browser_viewer(idx, plan.base, plan.space, until, ev, backoff, world,
                                     stay, plan.poll_s, random.Random(rng.random()))
            elif _protocol(plan, idx) == "ogg":
                await ogg_listener(idx, plan.base, plan.space, until, ev, backoff, client,
                                   stay)
            else:
                await ws_listener(idx, plan.base, plan.space, until, ev, backoff, stay)

        tasks = [asyncio.ensure_future(one(i)) for i in plan.listeners]
        reactor = asyncio.ensure_future(socket_reactions(
            world, plan.reactions if plan.protocol == "browser" else 0.0, until,
            random.Random(rng.random()), ev))
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            out.put((plan.worker, time.process_time(), ev.drain()))
        reactor.cancel()
        for t in tasks:
            if t.exception() is not None:
                ev.failed.append((-1, f"worker error: {t.exception()!r}"))
        out.put((plan.worker, time.process_time(), ev.drain()))
    out.put((plan.worker, time.process_time(), None))  # done


def worker_main(plan: Plan, start_wall: float, out: Any) -> None:
    """Entry point of one worker process."""
    asyncio.run(_run(plan, start_wall, out))


def spawn(plans: list[Plan], start_wall: float) -> tuple[list[Any], Any]:
    """Start one process per plan; returns them and the queue they report on."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(p, start_wall, queue), daemon=True)
             for p in plans]
    for p in procs:
        p.start()
    return procs, queue


def split(n: int, workers: int) -> list[tuple[int, ...]]:
    """Listener indices dealt round-robin so every worker ramps at the same pace."""
    return [tuple(range(w, n, workers)) for w in range(workers)]
