"""Once a second: per-Space listener counts and reaction deltas, and this edge's heartbeat."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from townhall.bus import subjects
from townhall.edge.gate import EdgeNode

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


def space_report(node: str, listeners: int, reactions: dict[str, int], url: str | None,
                 capacity: int, at: float) -> dict[str, Any]:
    """The body of ``townhall.<space>.stats.<node>``."""
    return {"node": node, "listeners": listeners, "reactions": reactions, "url": url,
            "capacity": capacity, "at": at}


def edge_report(node: str, url: str | None, capacity: int, listeners: int,
                at: float) -> dict[str, Any]:
    """The body of ``townhall.edges.<node>``."""
    return {"node": node, "url": url, "capacity": capacity, "listeners": listeners, "at": at}


async def publish_once(edge: EdgeNode) -> None:
    """Report every Space this edge feeds (zero listeners too, during the grace period)."""
    now = time.time()
    for space, feed in list(edge.hub.feeds.items()):
        reactions = dict(feed.reactions)
        feed.reactions.clear()
        body = space_report(edge.node, len(feed.subscribers), reactions, edge.url,
                            edge.capacity, now)
        await edge.hub.bus.publish(subjects.stats(space, edge.node), json.dumps(body).encode())
    beat = edge_report(edge.node, edge.url, edge.capacity, edge.hub.listeners(), now)
    await edge.hub.bus.publish(subjects.edge_announce(edge.node), json.dumps(beat).encode())


async def run(edge: EdgeNode) -> None:
    """Publish reports every second until cancelled."""
    while True:
        try:
            await publish_once(edge)
        except Exception:
            log.exception("edge stats report failed")
        await asyncio.sleep(INTERVAL_S)
