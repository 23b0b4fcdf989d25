"""Once a second: per-Space listener counts and reaction deltas, and this edge's heartbeat."""

from __future__ import annotations

import asyncio
import logging
import time

from townhall.bus import subjects
from townhall.bus.messages import EdgeHeartbeat, ListenerStats, encode
from townhall.edge.gate import EdgeNode

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


async def publish_once(edge: EdgeNode) -> None:
    """Report every Space this edge feeds (zero listeners too, during the grace period)."""
    now = time.time()
    for space, feed in list(edge.hub.feeds.items()):
        reactions = dict(feed.reactions)
        feed.reactions.clear()
        report = ListenerStats(edge.node, now, listeners=len(feed.subscribers),
                               reactions=reactions, url=edge.url, capacity=edge.capacity)
        await edge.hub.bus.publish(subjects.stats(space, edge.node), encode(report))
    beat = EdgeHeartbeat(edge.node, now, url=edge.url, capacity=edge.capacity,
                         listeners=edge.hub.listeners())
    await edge.hub.bus.publish(subjects.edge_announce(edge.node), encode(beat))


async def run(edge: EdgeNode) -> None:
    """Publish reports every second until cancelled."""
    while True:
        try:
            await publish_once(edge)
        except Exception:
            log.exception("edge stats report failed")
        await asyncio.sleep(INTERVAL_S)
