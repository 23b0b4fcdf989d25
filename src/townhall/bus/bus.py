"""The one seam to NATS: publish/subscribe, request/reply, key-value with
compare-and-set, and JetStream replay. Roles use this and never import nats-py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from prometheus_client import Counter

from townhall.bus import subjects
from townhall.bus.credentials import NatsAuth
from townhall.bus.stall import CHECK_S, WatchLag
from townhall.bus.tls import NatsTls
from townhall.cluster.leaders import Replica, StreamCluster

log = logging.getLogger(__name__)

RECONNECTS = Counter("townhall_nats_reconnects_total",
                     "Times this process's NATS connection moved (or came back) to a server")

Handler = Callable[["Message"], Awaitable[None]]


class CasConflict(Exception):
    """A key-value compare-and-set lost: someone else wrote first."""


class LeaderMoveRefused(Exception):
    """A stream leader step-down was answered with an error (e.g. the preferred server
    is already the leader, or not a replica)."""


class Fenced(Exception):
    """A fenced publish was refused: the subject's last stored message is not the one the
    publisher expected, i.e. someone else has written it since."""


EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"

# What NatsBus raises when NATS does not answer: a server cut off by a partition (no FIN,
# requests just wait), one restarting, JetStream with no leader or no responder for a
# while. Callers answer these "retry later" (the HTTP shells: 503 + Retry-After).
UNREACHABLE: tuple[type[Exception], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one; NatsBus.request raises the builtin
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
JS_TIMEOUT_S = 10.0  # a JetStream request (KV read or write, stream lookup) waits this long


@dataclass(frozen=True)
class Entry:
    """One key-value entry with the revision to compare against."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Change:
    """One key-value write as a watch sees it; ``value`` None means deleted or purged."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True)
class Message:
    """A message as roles see it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str = ""
    seq: int = 0  # the stream sequence, for a message read from a stream


@dataclass(frozen=True)
class Pulled:
    """A message from a durable consumer, to settle with ``ack`` (done), ``nak`` (deliver
    it again now) or keep with ``working`` (restarts the ack timer)."""

    message: Message
    delivered: int      # how many times the server has handed it out, this one included
    stored_at: float    # unix seconds when the stream stored it
    ack: Callable[[], Awaitable[None]]
    nak: Callable[[], Awaitable[None]]
    working: Callable[[], Awaitable[None]]


class Consumer:
    """A bound durable pull consumer; ``next()`` waits for one message."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def next(self, timeout: float) -> Pulled | None:
        """The next message, to settle (Pulled); None if none came within ``timeout`` s."""
        try:
            msgs = await self._sub.fetch(1, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        if not msgs:
            return None
        m = msgs[0]
        meta = m.metadata
        return Pulled(message=_message(m), delivered=int(meta.num_delivered or 1),
                      stored_at=meta.timestamp.timestamp(), ack=m.ack, nak=m.nak,
                      working=m.in_progress)

    async def stop(self) -> None:
        """Unbind the consumer (it stays on the server, durable)."""
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class Subscription:
    """A live subscription; ``await unsubscribe()`` ends it."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def unsubscribe(self) -> None:
        """Stop the handler (no error if the connection is already gone)."""
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class Watch:
    """A running key-value watch; ``ready`` is set once the initial values are applied."""

    def __init__(self, task: asyncio.Task[None], ready: asyncio.Event) -> None:
        self._task = task
        self.ready = ready

    async def stop(self) -> None:
        """Stop watching."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _message(msg: Msg) -> Message:
    return Message(subject=msg.subject, data=msg.data,
                   headers=dict(msg.headers or {}), reply=msg.reply or "")


class PullConsumer:
    """One durable pull consumer; ``fetch`` takes messages, each with its ack."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def fetch(self, batch: int = 100, timeout: float = 1.0
                    ) -> list[tuple[Message, Callable[[], Awaitable[None]]]]:
        """Up to ``batch`` messages, each with its ack; none if none came within
        ``timeout`` s."""
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [(_message(m), m.ack) for m in msgs]

    async def close(self) -> None:
        """Unbind the consumer (it stays on the server, durable)."""
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class NatsBus:
    """The Bus (townhall.bus.seam) over nats-py: a connection to the NATS cluster with
    townhall's streams and buckets ready."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self._nc = nc
        self._js = js
        self._kv: dict[str, KeyValue] = {}
        self._obs: dict[str, ObjectStore] = {}

    @classmethod
    async def connect(cls, urls: list[str], *, name: str = "townhall",
                      replicas: int = 1, setup: bool = True,
                      auth: NatsAuth | None = None, tls: NatsTls | None = None,
                      timeout: float = JS_TIMEOUT_S) -> NatsBus:
        """Connect (reconnecting forever on loss) and ensure the topology exists.

        ``auth`` is the only way credentials reach nats-py (bus/credentials.py); ``tls``
        verifies the servers against an operator's CA (bus/tls.py). A JetStream request
        unanswered after ``timeout`` seconds raises one of ``UNREACHABLE``."""
        async def moved() -> None:
            RECONNECTS.inc()
            log.info("NATS connection moved to %s", nc.connected_url.netloc
                     if nc.connected_url is not None else "?")

        nc = await nats.connect(
            servers=urls, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            # A server on a partitioned host sends no FIN: only unanswered pings tell, so
            # they are frequent (≈3 s to move to another node; 5 s x 3 took up to 20 s).
            allow_reconnect=True, ping_interval=1, max_outstanding_pings=3,
            # The operator's order, never shuffled: a process lists its own host's node
            # first (deploy/ does), so it uses that one while it is up, and on losing it
            # tries the others in order. A try at a node on a cut-off host waits out the
            # whole connect timeout (no RST comes back): 5 s made a move take 8-9 s.
            dont_randomize=True, connect_timeout=2, reconnected_cb=moved,
            **(auth.options() if auth is not None else {}),
            **(tls.options() if tls is not None else {}),
        )
        bus = cls(nc, nc.jetstream(timeout=timeout))
        if setup:
            await bus.ensure_topology(replicas)
        return bus

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up right now."""
        return bool(self._nc.is_connected)

    async def ensure_topology(self, replicas: int = 1) -> None:
        """Create (or adopt) the streams and buckets townhall uses; safe to race."""
        streams = [
            StreamConfig(name=subjects.MEDIA_STREAM, subjects=["townhall.*.media"],
                         max_age=subjects.MEDIA_MAX_AGE_S, storage=StorageType.FILE,
                         num_replicas=replicas),
            StreamConfig(name=subjects.AAC_STREAM, subjects=[subjects.aac("*")],
                         max_age=subjects.AAC_MAX_AGE_S, storage=StorageType.FILE,
                         num_replicas=replicas),
            StreamConfig(name=subjects.STATS_STREAM, subjects=["townhall.*.stats.*"],
                         retention=RetentionPolicy.WORK_QUEUE, max_age=30.0,
                         storage=StorageType.FILE, num_replicas=replicas),
            StreamConfig(name=subjects.WEBHOOKS_STREAM, subjects=[subjects.hooks("*")],
                         max_age=subjects.WEBHOOKS_MAX_AGE_S,
                         duplicate_window=subjects.WEBHOOKS_DEDUP_S,
                         storage=StorageType.FILE, num_replicas=replicas),
        ]
        for cfg in streams:
            try:
                await self._js.add_stream(cfg)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(cfg)
        # direct=True: any replica answers a read ($JS.API.DIRECT.GET), not only the
        # bucket's raft leader, so reads go on while a lost host's leader is re-elected
        # (4-9 s in nats-server, during which a leader-only read timed out: a speaker's
        # WHIP offer waited 10 s on it in a failover). Writes still go to the leader.
        buckets = [
            KeyValueConfig(bucket=subjects.SPACES_BUCKET, history=5, replicas=replicas,
                           storage=StorageType.FILE, direct=True),
            KeyValueConfig(bucket=subjects.LEASES_BUCKET, history=1, ttl=subjects.LEASE_TTL_S,
                           replicas=replicas, storage=StorageType.FILE, direct=True),
            KeyValueConfig(bucket=subjects.RECORDERS_BUCKET, history=1,
                           ttl=subjects.RECORDER_TTL_S, replicas=replicas,
                           storage=StorageType.FILE, direct=True),
        ]
        for kv in buckets:
            try:
                self._kv[kv.bucket] = await self._js.key_value(kv.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv[kv.bucket] = await self._js.create_key_value(kv)
                continue
            await self._read_direct(kv.bucket)
        name = subjects.RECORDINGS_BUCKET
        try:
            self._obs[name] = await self._js.object_store(name)
        except nats.js.errors.BucketNotFoundError:
            try:
                self._obs[name] = await self._js.create_object_store(
                    name, ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas))
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                # Only the api uses recordings (and may create them); a stage or edge
                # that starts first on a fresh cluster goes on without.
                log.warning("recordings store not there yet: %s", exc)

    async def _read_direct(self, bucket: str) -> None:
        """Turn direct reads on for a bucket made before they were (an upgrade); only a
        user allowed to update streams can (the api), the others read as the bucket says."""
        name = f"KV_{bucket}"
        try:
            info = await self._js.stream_info(name)
            if info.config.allow_direct:
                return
            info.config.allow_direct = True
            # Bounded: a refused publish is never answered, the request would wait it out.
            await asyncio.wait_for(self._js.update_stream(info.config), 2.0)
            self._kv[bucket] = await self._js.key_value(bucket)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.info("bucket %s keeps leader-only reads: %s", bucket, exc)

    async def _bucket(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self._js.key_value(bucket)
        return self._kv[bucket]

    # --- publish / subscribe -------------------------------------------------------------

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        """Fire and forget (stored too if a stream captures the subject)."""
        await self._nc.publish(subject, data, headers=headers)

    async def publish_durable(self, subject: str, data: bytes,
                              headers: dict[str, str] | None = None) -> int:
        """Publish into a stream and wait for its ack; returns the stream sequence."""
        ack = await self._js.publish(subject, data, headers=headers)
        return int(ack.seq)

    async def publish_fenced(self, subject: str, data: bytes, last_seq: int, *,
                             timeout: float = 1.0) -> int:
        """Publish into a stream only if ``last_seq`` is still the stream sequence of the
        subject's newest stored message (0: none); returns the new one. Raises Fenced when
        someone else wrote the subject since, TimeoutError when the stream did not answer
        (then the message may or may not be stored). Plain subscribers get the message
        either way: the fence keeps the stream, and so the publisher, honest."""
        try:
            ack = await self._js.publish(subject, data, timeout=timeout,
                                         headers={EXPECTED_LAST_SUBJECT_SEQ: str(last_seq)})
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise TimeoutError(f"no ack on {subject}") from exc
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) == 10071:  # wrong last sequence
                raise Fenced(subject) from exc
            raise
        return int(ack.seq)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Call ``handler`` with every message on ``subject`` until unsubscribed; a
        handler's exception is logged, never ends the subscription."""
        async def on_msg(msg: Msg) -> None:
            try:
                await handler(_message(msg))
            except Exception:
                log.exception("handler for %s failed", subject)

        return Subscription(await self._nc.subscribe(subject, queue=queue, cb=on_msg))

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0,
                      headers: dict[str, str] | None = None) -> Message:
        """Request/reply; raises TimeoutError when nobody answers in time."""
        try:
            msg = await self._nc.request(subject, data, timeout=timeout, headers=headers)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise TimeoutError(f"no reply on {subject}") from exc
        return _message(msg)

    async def respond(self, reply: str, data: bytes, headers: dict[str, str] | None = None
                      ) -> None:
        """Answer a request."""
        await self._nc.publish(reply, data, headers=headers)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was published reached the server."""
        await self._nc.flush(timeout=int(timeout))

    # --- key-value -----------------------------------------------------------------------

    async def kv_get(self, bucket: str, key: str) -> Entry | None:
        """The entry at ``key``, or None (absent or deleted)."""
        kv = await self._bucket(bucket)
        try:
            e = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return Entry(key=key, value=e.value or b"", revision=int(e.revision or 0))

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int:
        """Create a key that must not exist; CasConflict if it does."""
        kv = await self._bucket(bucket)
        try:
            return int(await kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise CasConflict(key) from exc

    async def kv_update(self, bucket: str, key: str, value: bytes, revision: int) -> int:
        """Write only if the entry is still at ``revision``; CasConflict otherwise."""
        kv = await self._bucket(bucket)
        try:
            return int(await kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise CasConflict(key) from exc
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) == 10071:  # wrong last sequence
                raise CasConflict(key) from exc
            raise

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new revision."""
        kv = await self._bucket(bucket)
        return int(await kv.put(key, value))

    async def kv_delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        """Delete ``key``; with ``revision``, only if it is still at that revision
        (CasConflict otherwise, e.g. already deleted by someone else)."""
        kv = await self._bucket(bucket)
        try:
            await kv.delete(key, last=revision)
        except nats.js.errors.KeyNotFoundError:
            pass
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise CasConflict(key) from exc
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) == 10071:  # wrong last sequence
                raise CasConflict(key) from exc
            raise

    async def kv_watch(self, bucket: str, on_change: Callable[[Change], None], *,
                       retry_s: float = 1.0) -> Watch:
        """Call ``on_change`` with the newest value of every key (deletions included),
        then with every later write, in order, until stopped. The ordered consumer
        underneath re-creates itself after a reconnect from where it stopped; if the
        watch itself fails it starts again from the newest values (``on_change`` must
        accept a revision it has already seen)."""
        ready = asyncio.Event()
        lag = WatchLag()

        async def run() -> None:
            while True:
                watcher = None
                guard = None
                try:
                    kv = await self._bucket(bucket)
                    # What the stream holds now comes with the initial values (or expired):
                    # the guard waits only for what is written after.
                    lag.restarted(await self._stream_last(bucket))
                    watcher = await kv.watchall()
                    guard = asyncio.ensure_future(self._watch_guard(bucket, lag, watcher))
                    async for entry in watcher:
                        if entry is None:  # the initial values are all delivered
                            ready.set()
                            continue
                        gone = entry.operation in ("DEL", "PURGE")
                        change = Change(key=entry.key, revision=int(entry.revision or 0),
                                        value=None if gone else (entry.value or b""))
                        lag.delivered(change.revision)
                        try:
                            on_change(change)
                        except Exception:
                            # One bad entry must not restart the watch (it would again).
                            log.exception("watch handler failed on %s", entry.key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("watch of %s failed; starting it again", bucket)
                finally:
                    if guard is not None:
                        guard.cancel()
                    if watcher is not None:
                        with contextlib.suppress(Exception):
                            await watcher.stop()
                await asyncio.sleep(retry_s)

        return Watch(asyncio.create_task(run(), name=f"watch-{bucket}"), ready)

    async def _watch_guard(self, bucket: str, lag: WatchLag, watcher: Any) -> None:
        """Stop ``watcher`` (its loop then starts a new one) once it stalled: behind the
        bucket's stream for ``STALL_S`` (bus.stall)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECK_S)
            if not lag.quiet():
                continue
            last = await self._stream_last(bucket)
            if last is None:
                continue  # the stream does not answer either: nothing to compare with
            if lag.stalled(last, loop.time()):
                log.warning("watch of %s stalled at revision %d (stream at %d); starting "
                            "it again", bucket, lag.seen, last)
                with contextlib.suppress(Exception):
                    await watcher.stop()  # ends the watch's iteration
                return

    async def _stream_last(self, bucket: str) -> int | None:
        """The last sequence of ``bucket``'s stream, None if it did not answer in time."""
        try:
            info = await asyncio.wait_for(self._js.stream_info(f"KV_{bucket}"), CHECK_S)
        except Exception:
            return None
        return int(info.state.last_seq)

    async def kv_keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket``."""
        kv = await self._bucket(bucket)
        try:
            return list(await kv.keys())
        except nats.js.errors.NoKeysError:
            return []

    # --- streams -------------------------------------------------------------------------

    async def stream_leader(self, stream: str) -> str | None:
        """The server name leading ``stream``'s replicas (None when not clustered), for
        operators' tools and tests that must hit the node that matters."""
        info = await self._js.stream_info(stream)
        return info.cluster.leader if info.cluster is not None else None

    async def stream_cluster(self, stream: str) -> StreamCluster | None:
        """``stream``'s raft group as its leader reports it (None when not clustered,
        or no such stream yet)."""
        try:
            info = await self._js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return None
        c = info.cluster
        if c is None:
            return None
        replicas = tuple(Replica(name=p.name or "", current=bool(p.current),
                                 offline=bool(p.offline), active_s=(p.active or 0) / 1e9)
                         for p in c.replicas or [])
        return StreamCluster(stream=stream, leader=c.leader or None, replicas=replicas)

    async def leader_stepdown(self, stream: str, preferred: str, *,
                              timeout: float = 2.0) -> None:
        """Ask ``stream``'s raft leader to hand over to the server named ``preferred``
        (nats-server 2.11+: the step-down request's ``placement.preferred``).
        LeaderMoveRefused when the server says no; TimeoutError when nobody answers."""
        body = json.dumps({"placement": {"preferred": preferred}}).encode()
        reply = await self.request(f"{self._js._prefix}.STREAM.LEADER.STEPDOWN.{stream}",
                                   body, timeout=timeout)
        answer = json.loads(reply.data or b"{}")
        if answer.get("error") or not answer.get("success"):
            error = answer.get("error") or {}
            raise LeaderMoveRefused(f"{stream}: {error.get('description', answer)}")

    async def last_message(self, stream: str, subject: str) -> Message | None:
        """The newest stored message on ``subject`` (e.g. the last chunk a stage sent)."""
        try:
            raw = await self._js.get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        return Message(subject=raw.subject or subject, data=raw.data or b"",
                       headers=dict(raw.headers or {}), seq=int(raw.seq or 0))

    async def replay(self, stream: str, subject: str, *, since_s: float,
                     limit: int = 1000, timeout: float = 2.0) -> list[Message]:
        """Stored messages on ``subject`` from the last ``since_s`` seconds, oldest first."""
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=since_s)
        cfg = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                             opt_start_time=start,
                             inactive_threshold=10.0)
        sub = await self._js.pull_subscribe(subject, stream=stream, config=cfg)
        out: list[Message] = []
        try:
            while len(out) < limit:
                try:
                    batch = await sub.fetch(min(256, limit - len(out)), timeout=timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                out.extend(_message(m) for m in batch)
                if len(batch) == 0:
                    break
                pending = batch[-1].metadata.num_pending
                if pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out

    async def pull(self, stream: str, durable: str, subject: str, *, batch: int = 100,
                   timeout: float = 1.0) -> list[tuple[Message, Callable[[], Awaitable[None]]]]:
        """Take up to ``batch`` messages from a shared durable consumer, each with its ack."""
        sub = await self._js.pull_subscribe(subject, durable=durable, stream=stream)
        try:
            msgs = await sub.fetch(batch, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [(_message(m), m.ack) for m in msgs]

    async def durable_consumer(self, stream: str, durable: str, subject: str, *,
                               max_ack_pending: int, ack_wait_s: float) -> Consumer:
        """Bind (creating it the first time, from new messages on) a durable pull consumer
        that processes share: each message goes to one of them, and back to the stream
        if not acked within ``ack_wait_s`` (its process died)."""
        cfg = ConsumerConfig(durable_name=durable, deliver_policy=DeliverPolicy.NEW,
                             ack_wait=ack_wait_s, max_ack_pending=max_ack_pending,
                             filter_subject=subject)
        return Consumer(await self._js.pull_subscribe(subject, durable=durable,
                                                      stream=stream, config=cfg))

    async def durable_pull(self, stream: str, durable: str, subject: str, *,
                           since: dt.datetime) -> PullConsumer:
        """A durable pull consumer of ``subject`` from ``since`` (or wherever it stopped,
        if it exists): messages stay unacknowledged (and come again) until acked."""
        cfg = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
                             ack_policy=AckPolicy.EXPLICIT, ack_wait=120.0,
                             max_ack_pending=5000, inactive_threshold=3600.0)
        sub = await self._js.pull_subscribe(subject, durable=durable, stream=stream,
                                            config=cfg)
        return PullConsumer(sub)

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer (no error if there is none)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(stream, durable)

    # --- object store --------------------------------------------------------------------

    async def _objects(self, bucket: str) -> ObjectStore:
        if bucket not in self._obs:
            self._obs[bucket] = await self._js.object_store(bucket)
        return self._obs[bucket]

    async def obj_put(self, bucket: str, name: str, data: bytes) -> None:
        """Store an object."""
        await (await self._objects(bucket)).put(name, data)

    async def obj_get(self, bucket: str, name: str) -> bytes | None:
        """An object's bytes, or None if there is none (or it was deleted)."""
        try:
            return bytes((await (await self._objects(bucket)).get(name)).data or b"")
        except nats.js.errors.ObjectNotFoundError:
            return None

    async def obj_get_into(self, bucket: str, name: str, out: Any) -> bool:
        """Stream an object into a binary file object; False if there is none."""
        try:
            await (await self._objects(bucket)).get(name, writeinto=out)
        except nats.js.errors.ObjectNotFoundError:
            return False
        return True

    async def obj_delete(self, bucket: str, name: str) -> None:
        """Delete an object (its chunks are purged from the stream on every node)."""
        with contextlib.suppress(nats.js.errors.ObjectNotFoundError,
                                 nats.js.errors.ObjectDeletedError):
            await (await self._objects(bucket)).delete(name)

    async def close(self) -> None:
        """Flush (briefly) and close the connection."""
        # Flush what we published, then close: drain() can wait ~30 s on subscriptions
        # whose handlers are being cancelled, which held up every shutdown.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.flush(), 1)
        with contextlib.suppress(Exception):
            await self._nc.close()
