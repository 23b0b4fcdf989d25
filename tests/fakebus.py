"""An in-memory Bus for unit tests of the shells' logic: no NATS, no sockets.

It satisfies townhall.bus.Bus (the Protocol), so a test passes it wherever a Bus is taken
without a cast. Subjects match with NATS wildcards (``*`` one token, ``>`` the rest);
key-value revisions and compare-and-set behave as JetStream's do; streams are lists of
what was published durably, kept with the loop time they arrived at. Tests that need a
slow or counting bus subclass it and override one method.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from townhall.bus import CasConflict, Change, Entry, Message, Subscription, Watch
from townhall.bus.bus import Consumer, Fenced, Handler, LeaderMoveRefused, PullConsumer
from townhall.cluster.leaders import Replica, StreamCluster


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` falls under the NATS subject ``pattern``."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


@dataclass
class _Sub:
    subject: str
    handler: Handler
    live: bool = True

    async def unsubscribe(self) -> None:
        self.live = False


@dataclass
class FakeBus:
    """In-memory publish/subscribe, request/reply, key-value and streams."""

    kv: dict[str, dict[str, Entry]] = field(default_factory=dict)
    objects: dict[str, dict[str, bytes]] = field(default_factory=dict)
    stored: list[tuple[float, Message]] = field(default_factory=list)
    published: list[Message] = field(default_factory=list)
    # Streams' raft groups (absent: not clustered), and the step-downs asked for.
    clusters: dict[str, StreamCluster] = field(default_factory=dict)
    stepdowns: list[tuple[str, str]] = field(default_factory=list)
    _subs: list[_Sub] = field(default_factory=list)
    _watchers: list[tuple[str, Callable[[Change], None]]] = field(default_factory=list)
    _revision: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _inbox: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def connected(self) -> bool:
        return True

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        await self._deliver(Message(subject, data, dict(headers or {})))

    async def publish_durable(self, subject: str, data: bytes,
                              headers: dict[str, str] | None = None) -> int:
        msg = Message(subject, data, dict(headers or {}))
        self.stored.append((asyncio.get_running_loop().time(), msg))
        await self._deliver(msg)
        return len(self.stored)

    async def publish_fenced(self, subject: str, data: bytes, last_seq: int, *,
                             timeout: float = 1.0) -> int:
        mine = [i + 1 for i, (_, m) in enumerate(self.stored) if m.subject == subject]
        if (mine[-1] if mine else 0) != last_seq:
            raise Fenced(subject)
        return await self.publish_durable(subject, data)

    async def _deliver(self, msg: Message) -> None:
        self.published.append(msg)
        for sub in [s for s in self._subs if s.live and matches(s.subject, msg.subject)]:
            await sub.handler(msg)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        sub = _Sub(subject, handler)
        self._subs.append(sub)
        return Subscription(sub)

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0,
                      headers: dict[str, str] | None = None) -> Message:
        reply = f"_INBOX.{next(self._inbox)}"
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Message) -> None:
            if not answer.done():
                answer.set_result(msg)

        sub = _Sub(reply, on_reply)
        self._subs.append(sub)
        try:
            await self._deliver(Message(subject, data, dict(headers or {}), reply))
            return await asyncio.wait_for(answer, timeout)
        finally:
            sub.live = False

    async def respond(self, reply: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        await self.publish(reply, data, headers)

    async def flush(self, timeout: float = 5.0) -> None:
        return None

    async def kv_get(self, bucket: str, key: str) -> Entry | None:
        return self.kv.get(bucket, {}).get(key)

    def _write(self, bucket: str, key: str, value: bytes | None) -> int:
        revision = next(self._revision)
        if value is None:
            self.kv.get(bucket, {}).pop(key, None)
        else:
            self.kv.setdefault(bucket, {})[key] = Entry(key, value, revision)
        for watched, on_change in self._watchers:
            if watched == bucket:
                on_change(Change(key, value, revision))
        return revision

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int:
        if key in self.kv.get(bucket, {}):
            raise CasConflict(key)
        return self._write(bucket, key, value)

    async def kv_update(self, bucket: str, key: str, value: bytes, revision: int) -> int:
        held = self.kv.get(bucket, {}).get(key)
        if held is None or held.revision != revision:
            raise CasConflict(key)
        return self._write(bucket, key, value)

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        return self._write(bucket, key, value)

    async def kv_delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        held = self.kv.get(bucket, {}).get(key)
        if revision is not None and (held is None or held.revision != revision):
            raise CasConflict(key)
        self._write(bucket, key, None)

    async def kv_watch(self, bucket: str, on_change: Callable[[Change], None], *,
                       retry_s: float = 1.0) -> Watch:
        for entry in list(self.kv.get(bucket, {}).values()):
            on_change(Change(entry.key, entry.value, entry.revision))
        watcher = (bucket, on_change)
        self._watchers.append(watcher)
        ready = asyncio.Event()
        ready.set()

        def forget(_: object) -> None:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)

        async def hold() -> None:
            await asyncio.Event().wait()

        # A callback, not a finally: a task cancelled before it first runs runs no finally.
        task = asyncio.ensure_future(hold())
        task.add_done_callback(forget)
        return Watch(task, ready)

    async def kv_keys(self, bucket: str) -> list[str]:
        return list(self.kv.get(bucket, {}))

    async def stream_cluster(self, stream: str) -> StreamCluster | None:
        return self.clusters.get(stream)

    async def leader_stepdown(self, stream: str, preferred: str, *,
                              timeout: float = 2.0) -> None:
        """As nats-server does: the preferred replica leads, the old leader follows."""
        self.stepdowns.append((stream, preferred))
        c = self.clusters[stream]
        if c.leader is None or c.leader == preferred or \
                preferred not in {r.name for r in c.replicas}:
            raise LeaderMoveRefused(f"{stream}: preferred server {preferred!r} not fit")
        followers = tuple(r for r in c.replicas if r.name != preferred)
        self.clusters[stream] = StreamCluster(stream, preferred,
                                              (*followers, Replica(c.leader, current=True)))

    async def last_message(self, stream: str, subject: str) -> Message | None:
        kept = [m for _, m in self.stored if matches(subject, m.subject)]
        return kept[-1] if kept else None

    async def replay(self, stream: str, subject: str, *, since_s: float,
                     limit: int = 1000, timeout: float = 2.0) -> list[Message]:
        start = asyncio.get_running_loop().time() - since_s
        return [m for t, m in self.stored if t >= start and matches(subject, m.subject)][:limit]

    async def pull(self, stream: str, durable: str, subject: str, *, batch: int = 100,
                   timeout: float = 1.0) -> list[tuple[Message, Callable[[], Awaitable[None]]]]:
        taken = [(t, m) for t, m in self.stored if matches(subject, m.subject)][:batch]
        for kept in taken:
            self.stored.remove(kept)

        async def ack() -> None:
            return None

        return [(m, ack) for _, m in taken]

    async def durable_consumer(self, stream: str, durable: str, subject: str, *,
                               max_ack_pending: int, ack_wait_s: float) -> Consumer:
        # Redelivery and ack deadlines are JetStream's behaviour to test, not a fake's.
        raise NotImplementedError("durable consumers need a real nats-server (nats_url)")

    async def durable_pull(self, stream: str, durable: str, subject: str, *,
                           since: dt.datetime) -> PullConsumer:
        raise NotImplementedError("durable consumers need a real nats-server (nats_url)")

    async def delete_consumer(self, stream: str, durable: str) -> None:
        return None

    async def obj_put(self, bucket: str, name: str, data: bytes) -> None:
        self.objects.setdefault(bucket, {})[name] = bytes(data)

    async def obj_get(self, bucket: str, name: str) -> bytes | None:
        return self.objects.get(bucket, {}).get(name)

    async def obj_get_into(self, bucket: str, name: str, out: Any) -> bool:
        data = await self.obj_get(bucket, name)
        if data is None:
            return False
        out.write(data)
        return True

    async def obj_delete(self, bucket: str, name: str) -> None:
        self.objects.get(bucket, {}).pop(name, None)

    async def close(self) -> None:
        self._subs.clear()
        self._watchers.clear()
