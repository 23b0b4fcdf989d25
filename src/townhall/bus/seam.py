"""The seam every role and core depends on: what townhall asks of NATS, as a Protocol.

``NatsBus`` (townhall.bus.bus) is the one implementation over nats-py; unit tests pass an
in-memory fake (tests/fakebus.py) that satisfies the same Protocol, so neither needs a
cast. Signatures here and in NatsBus must stay in step; mypy checks that wherever a
NatsBus is passed as a Bus.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from townhall.bus.bus import (
    Change,
    Consumer,
    Entry,
    Handler,
    Message,
    PullConsumer,
    Subscription,
    Watch,
)
from townhall.cluster.leaders import StreamCluster


class Bus(Protocol):
    """Publish/subscribe, request/reply, key-value with compare-and-set, stream replay."""

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up right now."""
        ...

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        """Fire and forget (stored too if a stream captures the subject)."""
        ...

    async def publish_durable(self, subject: str, data: bytes,
                              headers: dict[str, str] | None = None) -> int:
        """Publish into a stream and wait for its ack; returns the stream sequence."""
        ...

    async def publish_fenced(self, subject: str, data: bytes, last_seq: int, *,
                             timeout: float = 1.0) -> int:
        """Publish into a stream only if ``last_seq`` is still the stream sequence of the
        subject's newest stored message (0: none); returns the new one. Raises Fenced when
        someone else wrote the subject since, TimeoutError when the stream did not answer."""
        ...

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Call ``handler`` with every message on ``subject`` until unsubscribed."""
        ...

    async def request(self, subject: str, data: bytes, *, timeout: float = 5.0,
                      headers: dict[str, str] | None = None) -> Message:
        """Request/reply; raises TimeoutError when nobody answers in time."""
        ...

    async def respond(self, reply: str, data: bytes,
                      headers: dict[str, str] | None = None) -> None:
        """Answer a request."""
        ...

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was published reached the server."""
        ...

    async def kv_get(self, bucket: str, key: str) -> Entry | None:
        """The entry at ``key``, or None."""
        ...

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int:
        """Create a key that must not exist; CasConflict if it does."""
        ...

    async def kv_update(self, bucket: str, key: str, value: bytes, revision: int) -> int:
        """Write only if the entry is still at ``revision``; CasConflict otherwise."""
        ...

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new revision."""
        ...

    async def kv_delete(self, bucket: str, key: str, revision: int | None = None) -> None:
        """Delete ``key``; with ``revision``, only if it is still at that revision."""
        ...

    async def kv_watch(self, bucket: str, on_change: Callable[[Change], None], *,
                       retry_s: float = 1.0) -> Watch:
        """Call ``on_change`` with every key's newest value, then every later write."""
        ...

    async def kv_keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket``."""
        ...

    async def stream_cluster(self, stream: str) -> StreamCluster | None:
        """``stream``'s raft leader and replicas (None when not clustered)."""
        ...

    async def leader_stepdown(self, stream: str, preferred: str, *,
                              timeout: float = 2.0) -> None:
        """Ask ``stream``'s raft leader to hand over to the server ``preferred``."""
        ...

    async def last_message(self, stream: str, subject: str) -> Message | None:
        """The newest stored message on ``subject``."""
        ...

    async def replay(self, stream: str, subject: str, *, since_s: float,
                     limit: int = 1000, timeout: float = 2.0) -> list[Message]:
        """Stored messages on ``subject`` from the last ``since_s`` seconds, oldest first."""
        ...

    async def pull(self, stream: str, durable: str, subject: str, *, batch: int = 100,
                   timeout: float = 1.0) -> list[tuple[Message, Callable[[], Awaitable[None]]]]:
        """Take up to ``batch`` messages from a shared durable consumer, each with its ack."""
        ...

    async def durable_consumer(self, stream: str, durable: str, subject: str, *,
                               max_ack_pending: int, ack_wait_s: float) -> Consumer:
        """Bind a durable pull consumer that processes share (each message to one of them,
        redelivered if not acked within ``ack_wait_s``)."""
        ...

    async def durable_pull(self, stream: str, durable: str, subject: str, *,
                           since: dt.datetime) -> PullConsumer:
        """A durable pull consumer of ``subject`` from ``since`` (or where it stopped)."""
        ...

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer (no error if there is none)."""
        ...

    async def obj_put(self, bucket: str, name: str, data: bytes) -> None:
        """Store an object."""
        ...

    async def obj_get(self, bucket: str, name: str) -> bytes | None:
        """An object's bytes, or None if there is none."""
        ...

    async def obj_get_into(self, bucket: str, name: str, out: Any) -> bool:
        """Stream an object into a binary file object; False if there is none."""
        ...

    async def obj_delete(self, bucket: str, name: str) -> None:
        """Delete an object (no error if there is none)."""
        ...

    async def close(self) -> None:
        """Flush and close the connection."""
        ...
