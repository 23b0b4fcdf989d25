"""A Space feed without the bus: chunks shared once, held while coalescing, no duplicates."""

from __future__ import annotations

import json

from tests.snapshots import space
from townhall.edge.feed import Feed, Gap
from townhall.edge.frame import Frame
from townhall.edge.subscriber import Subscriber
from townhall.media.chunk import Chunk
from townhall.media.ogg import OggOpusStream


def chunk(seq: int) -> bytes:
    return Chunk(seq=seq, pts=seq * 4800, sent_us=0, packets=(b"\xf8\x01",) * 5).encode()


def drain(sub: Subscriber) -> list[Frame]:
    out = []
    while (f := sub.next_frame()) is not None:
        out.append(f)
    return out


def test_every_listener_gets_the_same_bytes_object() -> None:
    feed = Feed("s", OggOpusStream())
    a, b = Subscriber("ws"), Subscriber("ogg")
    feed.attach(a)
    feed.attach(b)
    feed.on_media(chunk(1))
    feed.on_media(chunk(1))        # duplicate ignored
    feed.on_media(b"garbage")      # malformed ignored
    fa, fb = drain(a), drain(b)
    assert len(fa) == len(fb) == 1 and fa[0] is fb[0]
    assert fa[0].ws == chunk(1) and fa[0].ogg.startswith(b"OggS")


def test_coalescing_holds_chunks_then_flushes_in_order_without_skips() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=3)
    feed.attach(sub)
    feed.coalesce = True
    for s in range(1, 11):
        feed.on_media(chunk(s))
    assert drain(sub) == []
    feed.flush()  # 10 held chunks at once into a backlog of 3: no skip
    assert [f.seq for f in drain(sub)] == list(range(1, 11))
    for s in range(11, 21):
        feed.on_media(chunk(s))
    sub.preload([(s, f) for s, f in feed.ring.since(19)])  # a resume during the hold
    feed.flush()
    assert [f.seq for f in drain(sub)] == [19, 20]  # held 11..18 predate its resume point
    assert sub.backlog.skips == 0


def test_flush_after_preload_drops_duplicates() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=20)
    feed.coalesce = True
    for s in range(1, 6):
        feed.on_media(chunk(s))
    sub.preload(feed.ring.since(1))
    feed.attach(sub)
    feed.flush()
    assert [f.seq for f in drain(sub)] == [1, 2, 3, 4, 5]


def test_ended_state_closes_with_4410_after_the_state_frame() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws")
    feed.attach(sub)
    feed.on_state(space({"id": "s", "state": "live", "version": 2, "_blocked": ["x"]}))
    feed.on_state(space(id="s", state="live", version=1))  # older: ignored
    feed.on_state(space(id="s", state="ended", version=3))
    states = [json.loads(t) for t in sub.texts]
    assert [s["snapshot"]["version"] for s in states] == [2, 3]
    assert "_blocked" not in states[0]["snapshot"]
    assert sub.close is not None and sub.close[0] == 4410


def test_a_hole_in_the_live_sequence_is_refilled_before_later_chunks_go_out() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=20)
    feed.attach(sub)
    feed.repairs = True
    # 3 and 4 missed (e.g. our NATS node died meanwhile)
    gaps = [feed.on_media(chunk(s)) for s in (1, 2, 5, 6)]
    assert gaps == [None, None, Gap(3, 4), None]
    assert [f.seq for f in drain(sub)] == [1, 2]  # 5 and 6 wait for the refill
    assert feed.on_media(chunk(7)) is None
    feed.repaired([feed.frame(chunk(4)), feed.frame(chunk(3))])
    assert [f.seq for f in drain(sub)] == [3, 4, 5, 6, 7]
    assert feed.on_media(chunk(8)) is None
    assert [f.seq for f in drain(sub)] == [8]


def test_a_refill_that_finds_nothing_still_delivers_the_held_chunks() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=20)
    feed.attach(sub)
    feed.repairs = True
    for s in (1, 4, 5):
        feed.on_media(chunk(s))
    feed.repaired([])
    assert [f.seq for f in drain(sub)] == [1, 4, 5]


def test_a_replay_seeds_an_empty_ring_so_a_hole_after_it_is_refilled() -> None:
    feed = Feed("s", OggOpusStream())
    feed.repairs = True
    feed.seed([feed.frame(chunk(s)) for s in (5, 3, 4)])  # a short replay: 3..5
    sub = Subscriber("ws", backlog_limit=20)
    sub.preload(feed.ring.since(3))
    feed.attach(sub)
    # live is already past 6: 6 and 7 must come from JetStream
    assert feed.on_media(chunk(8)) == Gap(6, 7)
    feed.repaired([feed.frame(chunk(6)), feed.frame(chunk(7))])
    assert [f.seq for f in drain(sub)] == [3, 4, 5, 6, 7, 8]


def test_seeding_a_ring_that_already_holds_live_chunks_changes_nothing() -> None:
    feed = Feed("s", OggOpusStream())
    feed.on_media(chunk(10))
    feed.seed([feed.frame(chunk(s)) for s in (3, 4)])
    assert feed.ring.first_seq == feed.ring.last_seq == 10
