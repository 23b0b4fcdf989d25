"""The AAC packager against a real NATS: one encoder per Space however many apis ask, and
the api that takes the Space's key over continues the frames' stamps with no gap and no
frame twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from itertools import islice

import pytest

from tests.tone import ToneChunks
from tests.waiting import until_async
from townhall.api.store import SpaceStore
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Message, Subscription
from townhall.media.aac import AacBatch
from townhall.media.fmp4 import AAC_FRAME_SAMPLES
from townhall.recording.aacpackager import Packager
from townhall.room import rules

pytestmark = pytest.mark.timeout(60)


async def live_space(bus: NatsBus, store: SpaceStore, title: str
                     ) -> tuple[str, list[AacBatch], Subscription]:
    """A live Space, and the AAC batches its packager publishes as they come."""
    space = rules.new_space_id()
    doc = rules.create(space, rules.Actor("h1", "Host"), title=title, now=time.time())
    await store.create(replace(doc, state="live"))
    batches: list[AacBatch] = []

    async def on_batch(msg: Message) -> None:
        batches.append(AacBatch.decode(msg.data))

    return space, batches, await bus.subscribe(subjects.aac(space), on_batch)


async def test_one_encoder_per_space_and_a_takeover_continues_the_stamps(
        nats_url: str) -> None:
    bus = await NatsBus.connect([nats_url])
    store = SpaceStore(bus)
    space, batches, sub = await live_space(bus, store, "AAC")
    tone = iter(ToneChunks(440, first_seq=1))
    first = list(islice(tone, 20))
    for chunk in first:
        await bus.publish(subjects.media(space), chunk.encode())
    a, b = Packager(bus, store, "api-a"), Packager(bus, store, "api-b")
    try:
        a.want_live(space)
        await until_async(lambda: bool(batches) and batches[-1].src == first[-1].seq, 20,
                    "api-a encodes the program so far")
        b.want_live(space)  # api-a holds the key: api-b encodes nothing
        await until_async(lambda: space not in b.running, 10, "api-b gives up at once")
        held_by_a = len(batches)
        await a.stop()  # hands the key over (deleted at once)
        second = list(islice(tone, 20))
        for chunk in second:
            await bus.publish(subjects.media(space), chunk.encode())


        def asked_again() -> bool:  # HLS requests keep coming to api-b
            b.want_live(space)
            return batches[-1].src == second[-1].seq

        await until_async(asked_again, 20, "api-b continues where api-a stopped")
        assert len(batches) > held_by_a
        assert batches[held_by_a].pts == batches[held_by_a - 1].end_pts  # no gap, no overlap
        stamps = [t for batch in batches for t, _ in batch.stamped()]
        assert stamps == list(range(stamps[0], stamps[-1] + 1, AAC_FRAME_SAMPLES))
        assert [x.seq for x in batches] == list(range(len(batches)))
        assert stamps[0] == first[0].pts
    finally:
        await a.stop()
        await b.stop()
        await sub.unsubscribe()
        await bus.close()


async def test_live_aac_stops_when_no_api_asks_and_resumes_on_the_spaces_clock(
        nats_url: str) -> None:
    bus = await NatsBus.connect([nats_url])
    store = SpaceStore(bus)
    space, batches, sub = await live_space(bus, store, "AAC idle")
    tone = iter(ToneChunks(440, first_seq=1))

    async def say(n: int) -> int:
        chunks = list(islice(tone, n))
        for chunk in chunks:
            await bus.publish(subjects.media(space), chunk.encode())
        return chunks[-1].seq

    # Short times for the test: the packager stops 1.5 s after the last "wanted".
    a = Packager(bus, store, "api-a", idle_s=1.5, want_every_s=0.1)
    b = Packager(bus, store, "api-b", idle_s=1.5, want_every_s=0.1)
    key = subjects.packager_key(space)
    try:
        last = await say(10)
        a.want_live(space)
        await until_async(lambda: bool(batches) and batches[-1].src == last, 20, "api-a encodes")
        # Requests on api-b alone keep api-a's encoder going past its idle time.
        asked_until = time.monotonic() + 2.5
        while time.monotonic() < asked_until:
            b.want_live(space)
            await asyncio.sleep(0.1)
        assert space in a.running, "api-a stopped although api-b was asked"
        assert (await bus.kv_get(subjects.RECORDERS_BUCKET, key)) is not None
        # Nobody asks any more: api-a stops and lets go of the key.
        await until_async(lambda: space not in a.running, 10, "api-a stops when nobody asks")
        assert space not in b.running
        assert (await bus.kv_get(subjects.RECORDERS_BUCKET, key)) is None
        held = len(batches)
        last = await say(10)  # the Space goes on meanwhile

        def asked_again() -> bool:
            b.want_live(space)
            return batches[-1].src == last

        await until_async(asked_again, 20, "the next request (on api-b) resumes the AAC")
        assert len(batches) > held
        assert batches[held].pts == batches[held - 1].end_pts  # the same timeline
        stamps = [t for batch in batches for t, _ in batch.stamped()]
        assert stamps == list(range(stamps[0], stamps[-1] + 1, AAC_FRAME_SAMPLES))
    finally:
        await a.stop()
        await b.stop()
        await sub.unsubscribe()
        await bus.close()
