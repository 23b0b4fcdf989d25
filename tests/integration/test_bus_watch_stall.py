"""A key-value watch whose consumer vanished server-side is started again within seconds.

After a partition heals, the ordered consumer behind a watch on the rejoined node can stop
delivering (h1's watch of ``stage_leases`` saw takeovers up to 18.7 s late); nats-py
notices only after two missed 5 s heartbeats and re-creates it once. Deleting the
consumer on the server is the same silence, made on purpose: the bus's guard (bus.stall)
sees the watch fall behind the bucket's stream and starts it again.
"""

from __future__ import annotations

import uuid

from tests.waiting import until_async
from townhall.bus.bus import Change, NatsBus

# nats-py alone resumes no sooner than 10 s after the silence (2 missed heartbeats).
BOUND_S = 8.0


async def test_a_watch_whose_consumer_vanished_resumes(nats_url: str) -> None:
    bus = await NatsBus.connect([nats_url], name="watch-stall")
    seen: dict[str, bytes | None] = {}

    def note(change: Change) -> None:
        seen[change.key] = change.value

    bucket = f"watchstall{uuid.uuid4().hex[:6]}"  # no TTL, and nobody else's
    await bus._js.create_key_value(bucket=bucket)
    stream = f"KV_{bucket}"
    before, after = f"k{uuid.uuid4().hex[:8]}", f"k{uuid.uuid4().hex[:8]}"
    watch = await bus.kv_watch(bucket, note)
    try:
        await bus.kv_put(bucket, before, b"1")
        await until_async(lambda: before in seen, BOUND_S, "the first write")
        jsm = bus._js._jsm  # the test removes the watch's consumer
        for info in await jsm.consumers_info(stream):
            await jsm.delete_consumer(stream, info.name)
        await bus.kv_put(bucket, after, b"2")
        await until_async(lambda: after in seen, BOUND_S, "the write after the stall")
        assert seen[after] == b"2"
    finally:
        await watch.stop()
        await bus._js.delete_key_value(bucket)
        await bus.close()
