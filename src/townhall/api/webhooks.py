"""Webhooks, the api's shell: derive events from every change of the ``spaces`` bucket,
store them in the WEBHOOKS stream, and deliver them to each endpoint through a durable
consumer the api processes share (at least once; an api restart loses none).

Nothing here is on a Space's path: the watch only reads the bucket, events wait in a queue
for one publishing task, and each endpoint has one sending task with its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import Counter

from townhall.bus import Bus, subjects
from townhall.bus.bus import Change, Pulled, Watch
from townhall.context import Context
from townhall.hooks.endpoints import Endpoint, WebhookConfig, parse_config
from townhall.hooks.events import Event, Snapshot, events_between
from townhall.room.snapshot import SnapshotError, decode

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000    # events derived but not yet stored; beyond, counted and dropped
# An api that died mid-delivery hands its event on after this. (A clean stop hands it
# back at once, unless NATS restarts too: the server keeps no nak across a restart.)
ACK_WAIT_S = 10.0
TYPE_HEADER = "Townhall-Event-Type"

EVENTS = Counter("townhall_webhook_events_total", "webhook events stored", ["type"])
SENT = Counter("townhall_webhook_sent_total", "events an endpoint accepted (2xx)",
               ["endpoint"])
FAILED = Counter("townhall_webhook_failed_attempts_total",
                 "delivery attempts that failed (status, timeout, connection)", ["endpoint"])
RETRIED = Counter("townhall_webhook_retries_total", "delivery attempts scheduled again",
                  ["endpoint"])
DROPPED = Counter("townhall_webhook_dropped_total",
                  "events given up after the retry bound", ["endpoint"])
LOST = Counter("townhall_webhook_unqueued_total",
               "events not stored: the queue to the stream was full")


def load_config(path: Path) -> WebhookConfig:
    """Read the webhooks file; warns when others may read its secrets."""
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it", path)
    try:
        return parse_config(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class EventSource:
    """Follows the ``spaces`` bucket and stores each change's events, in order."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: dict[str, tuple[int, Snapshot]] = {}
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        self.watch: Watch | None = None

    def changed(self, change: Change) -> None:
        """A write to the bucket (or one of the initial values when the watch starts)."""
        last = self.seen.get(change.key)
        if last is not None and change.revision <= last[0]:
            return  # a restarted watch re-reads what it has seen
        if change.value is None:
            self.seen.pop(change.key, None)
            return
        try:
            new = decode(change.value)
        except SnapshotError:
            log.warning("spaces/%s is not a Space; no webhook events for it", change.key)
            return
        self.seen[change.key] = (change.revision, new)
        if last is None and not (self.watch is not None and self.watch.ready.is_set()):
            return  # an initial value: what came before it was some api's to announce
        old = None if last is None else last[1]
        if last is None and new.version != 1:
            return  # first sight of an old Space (e.g. after a restart): nothing to diff
        for event in events_between(old, new):
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                LOST.inc()

    async def run(self) -> None:
        """Store queued events; a NATS outage holds them here, in order."""
        while True:
            event = await self.queue.get()
            failures = 0
            while True:
                try:
                    await self.bus.publish_durable(
                        subjects.hooks(event.space), event.body(time.time()),
                        headers={"Nats-Msg-Id": event.id, TYPE_HEADER: event.type})
                    EVENTS.labels(event.type).inc()
                    break
                except Exception:
                    failures += 1
                    log.warning("could not store webhook event %s (try %d)", event.id,
                                failures, exc_info=failures == 1)
                    await asyncio.sleep(min(5.0, 0.1 * 2 ** failures))


class Sender:
    """Delivers one endpoint's events one at a time, in stream order, retrying the head
    until it is accepted or given up: a Space's events never overtake each other."""

    def __init__(self, bus: Bus, endpoint: Endpoint, config: WebhookConfig,
                 client: httpx.AsyncClient) -> None:
        self.bus = bus
        self.endpoint = endpoint
        self.retry = config.retry
        self.client = client

    async def run(self) -> None:
        """Deliver this endpoint's events from its durable consumer until cancelled."""
        consumer = None
        while consumer is None:
            try:
                consumer = await self.bus.durable_consumer(
                    subjects.WEBHOOKS_STREAM, f"hooks-{self.endpoint.name}",
                    subjects.hooks("*"), max_ack_pending=1, ack_wait_s=ACK_WAIT_S)
            except Exception:
                log.warning("webhook consumer for %s not ready; retrying", self.endpoint.name,
                            exc_info=True)
                await asyncio.sleep(1.0)
        try:
            while True:
                try:
                    pulled = await consumer.next(timeout=5.0)
                except Exception:
                    log.warning("webhook fetch for %s failed", self.endpoint.name,
                                exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                if pulled is not None:
                    await self._settle(pulled)
        finally:
            await consumer.stop()

    async def _settle(self, pulled: Pulled) -> None:
        try:
            await self._deliver(pulled)
        except asyncio.CancelledError:
            # Shutting down mid-delivery: hand it back now, not after the ack wait.
            try:
                await asyncio.wait_for(pulled.nak(), 1.0)
            except Exception:
                log.warning("webhook not handed back on shutdown", exc_info=True)
            raise

    async def _deliver(self, pulled: Pulled) -> None:
        name = self.endpoint.name
        event_id = pulled.message.headers.get("Nats-Msg-Id", "")
        event_type = pulled.message.headers.get(TYPE_HEADER, "")
        if not event_id or not self.endpoint.wants(event_type):
            await pulled.ack()
            return
        failed = 0
        while True:
            if await self._attempt(event_id, pulled.message.data):
                SENT.labels(name).inc()
                await pulled.ack()
                return
            failed += 1
            FAILED.labels(name).inc()
            at = self.retry.next_attempt(failed, first_seen=pulled.stored_at,
                                         now=time.time(), rand=random.random())
            if at is None:
                DROPPED.labels(name).inc()
                log.warning("webhook %s to %s given up after %d attempts", event_id, name,
                            failed)
                await pulled.ack()
                return
            RETRIED.labels(name).inc()
            await self._wait_until(at, pulled)

    async def _wait_until(self, at: float, pulled: Pulled) -> None:
        # Keep the event ours while we wait: the server would otherwise hand it to
        # another api after the ack wait, and two would retry it at once.
        while (left := at - time.time()) > 0:
            await asyncio.sleep(min(left, ACK_WAIT_S / 3))
            with contextlib.suppress(Exception):
                await pulled.working()

    async def _attempt(self, event_id: str, body: bytes) -> bool:
        headers = self.endpoint.signer.headers(event_id, int(time.time()), body)
        try:
            async with self.client.stream("POST", self.endpoint.url, content=body,
                                          headers=headers,
                                          timeout=self.endpoint.timeout_s) as response:
                ok = 200 <= response.status_code < 300
                if not ok:
                    log.info("webhook %s to %s: HTTP %d", event_id, self.endpoint.name,
                             response.status_code)
                return ok
        except httpx.HTTPError as exc:
            log.info("webhook %s to %s: %s", event_id, self.endpoint.name,
                     type(exc).__name__)
            return False


def install(app: FastAPI, ctx: Context) -> None:
    """Start webhooks when the operator configured them (``--webhooks``)."""
    del app
    path = ctx.settings.webhooks
    if path is None:
        return
    config = load_config(path)
    source = EventSource(ctx.bus)
    tasks: list[asyncio.Task[None]] = []
    # Redirects are not followed: a receiver's answer must not steer signed bodies
    # somewhere else.
    client = httpx.AsyncClient(follow_redirects=False, headers={"user-agent": "townhall"})

    async def start() -> None:
        tasks.append(asyncio.create_task(source.run(), name="webhook-store"))
        source.watch = await ctx.bus.kv_watch(subjects.SPACES_BUCKET, source.changed)
        for endpoint in config.endpoints:
            sender = Sender(ctx.bus, endpoint, config, client)
            tasks.append(asyncio.create_task(sender.run(), name=f"webhook-{endpoint.name}"))
        log.info("webhooks: %d endpoint(s)", len(config.endpoints))

    async def stop() -> None:
        if source.watch is not None:
            await source.watch.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await client.aclose()

    ctx.on_start.append(start)
    ctx.on_stop.append(stop)
