"""The edge role in one process: its node (townhall.edge.gate), its pacer and its
once-a-second stats. Its listener connections are raw protocols handed over by
edge/handoff.py, not ASGI routes, so it adds no route to the app."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI

from townhall.context import Context
from townhall.edge import stats
from townhall.edge.gate import EdgeNode, interval_floor_from_env
from townhall.edge.hub import Hub


def install(app: FastAPI, ctx: Context) -> None:
    """Serve /ws/{space} and /listen/{space}.opus from this process (``app.state.edge``;
    serve.py gives uvicorn the handoff protocol for it)."""
    hub = Hub(ctx.bus, interval_floor_s=interval_floor_from_env())
    edge = EdgeNode(hub=hub, issuer=ctx.issuer, node=ctx.settings.node_id,
                    url=ctx.settings.public_url or None)
    app.state.edge = edge
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.ensure_future(stats.run(edge)))
        tasks.append(asyncio.ensure_future(edge.hub.pace()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await edge.hub.close()

    ctx.on_start.append(start)
    ctx.on_stop.append(stop)
