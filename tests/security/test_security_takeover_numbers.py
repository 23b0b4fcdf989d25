"""No chunk number reaches listeners twice across a takeover, and a healthy owner keeps its
Space when only its lease renewals went unanswered.

While ``MEDIA`` has no leader an owner keeps its listeners fed on the plain subject, and
those chunks are never stored. A stage taking over used to number after the newest
*stored* chunk, below what listeners had heard: edges dropped its chunks as repeats for
seconds (issue 19: 74 numbers published twice with different audio). Here the old owner's
unstored chunks are made the same way the stream sees them (refused, yet delivered to
plain subscribers), and its heartbeat reports them as a real stage's does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.snapshots import space as live_space
from tests.waiting import until_async
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus import Bus, subjects
from townhall.bus.bus import EXPECTED_LAST_SUBJECT_SEQ, Message, NatsBus
from townhall.bus.messages import StageHeartbeat, encode
from townhall.context import Context
from townhall.media.chunk import Chunk
from townhall.settings import Settings
from townhall.stage.role import Stage

pytestmark = pytest.mark.timeout(60)
CHUNK = 4800


@pytest.fixture
async def stage(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stage, Bus]]:
    buses: list[Bus] = [await NatsBus.connect([nats_url]) for _ in range(2)]
    settings = Settings(data_dir=tmp_path / "s", roles=("stage",), nats_urls=[nats_url],
                        node_id="stage-b")
    settings.data_dir.mkdir(parents=True)
    made = Stage(Context(settings=settings, bus=buses[0],
                         issuer=TokenIssuer(load_or_create_secret(settings.data_dir))))
    try:
        yield made, buses[1]
    finally:
        await made.stop()
        for bus in buses:
            await bus.close()


def chunk(seq: int) -> Chunk:
    return Chunk(seq=seq, pts=seq * CHUNK, sent_us=int(time.time() * 1e6),
                 packets=(b"\xf8\xff\xfe",) * 5)


async def test_a_takeover_numbers_past_chunks_listeners_heard_but_the_stream_never_stored(
        stage: tuple[Stage, Bus]) -> None:
    b, ghost = stage
    await b.start()  # hears heartbeats; the Space is not in the bucket, so b waits for us
    space = "unstored" + str(id(b))[-6:]
    media = subjects.media(space)
    heard: list[int] = []

    async def on_media(msg: Message) -> None:
        heard.append(Chunk.decode(msg.data).seq)

    await ghost.subscribe(media, on_media)
    # The old owner: chunks 0-9 stored, then 10-40 while the stream "had no leader".
    stored = 0
    for seq in range(10):
        stored = await ghost.publish_fenced(media, chunk(seq).encode(), stored)
    last = chunk(40)
    for seq in range(10, 41):
        await ghost.publish(media, (last if seq == 40 else chunk(seq)).encode(),
                            headers={EXPECTED_LAST_SUBJECT_SEQ: "999999999"})
    await until_async(lambda: len(heard) == 41, 5, "the old owner's chunks")
    newest = await ghost.last_message(subjects.MEDIA_STREAM, media)
    assert newest is not None and Chunk.decode(newest.data).seq == 9  # 10-40: never stored
    # Its heartbeat says how far it got (a real owner sends it as it happens, then each
    # second), then it dies: its lease is gone.
    await ghost.publish(subjects.stage_report("stage-a"), encode(StageHeartbeat(
        "stage-a", spaces=[space], ahead={space: [last.seq, last.pts, last.sent_us]})))
    await until_async(lambda: b.rivals.floor(space), 5, "the heartbeat")

    assert await b.acquire(space, live_space(id=space))
    await until_async(lambda: len(heard) >= 46, 10, "the new owner's chunks")
    ours = heard[41:]
    assert ours[0] > 40, f"numbered {ours[0]}, below what listeners heard (40)"
    assert ours == list(range(ours[0], ours[0] + len(ours)))
    first = await ghost.replay(subjects.MEDIA_STREAM, media, since_s=30)
    assert [Chunk.decode(m.data).seq for m in first][:11] == [*range(10), ours[0]]
    assert b.rivals.floor(space) is None  # stored past it: forgotten


async def test_an_owner_retakes_a_lease_that_expired_unanswered_but_not_a_taken_one(
        stage: tuple[Stage, Bus]) -> None:
    b, watcher = stage
    space = "retake" + str(id(b))[-6:]
    media = subjects.media(space)
    heard: list[int] = []

    async def on_media(msg: Message) -> None:
        heard.append(Chunk.decode(msg.data).seq)

    await watcher.subscribe(media, on_media)
    assert await b.acquire(space, live_space(id=space))
    await until_async(lambda: len(heard) >= 3, 10, "the owner's chunks")
    # The lease expires while the leases bucket did not answer (here: it is simply gone);
    # the owner's chunks are still stored, so its next renewal takes the lease again.
    await watcher.kv_delete(subjects.LEASES_BUCKET, space)
    await b.tend()
    assert space in b.runs and b.lost == 0
    lease = await watcher.kv_get(subjects.LEASES_BUCKET, space)
    assert lease is not None and lease.value == b"stage-b"
    count = len(heard)
    await until_async(lambda: len(heard) >= count + 3, 10, "chunks after the retake")
    # Another stage's lease, though, stops it at once.
    await watcher.kv_put(subjects.LEASES_BUCKET, space, b"stage-z")
    await b.tend()
    assert space not in b.runs and b.lost == 1
    lease = await watcher.kv_get(subjects.LEASES_BUCKET, space)
    assert lease is not None and lease.value == b"stage-z"  # not ours to delete
