"""Coalescing, counting and rate limiting: the pure parts of the api."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from tests.snapshots import space
from townhall.api.ratelimit import TokenBuckets
from townhall.bus.messages import EdgeHeartbeat, ListenerStats
from townhall.room.coalescer import Coalescer
from townhall.room.counting import EdgeRegistry, ReactionTally, fold, rank_edges
from townhall.room.snapshot import EdgeSeen


def snap(version: int, space: str = "s1") -> dict[str, Any]:
    return {"id": space, "version": version, "listeners": 0, "reactions": {}, "_edges": {}}


def test_coalescer_sends_at_most_four_a_second_and_ends_on_the_newest() -> None:
    c = Coalescer(rate=4)
    sent: list[tuple[float, int]] = []
    t = 0.0
    for version in range(1, 201):  # 200 changes in 2 s
        t = version * 0.01
        out = c.offer(snap(version), t)
        if out:
            sent.append((t, out["version"]))
        sent += [(t, s["version"]) for s in c.due(t)]
    for step in range(1, 20):
        sent += [(t + step * 0.05, s["version"]) for s in c.due(t + step * 0.05)]
    times = [at for at, _ in sent]
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(sent) <= 2 * 4 + 1
    assert sent[-1][1] == 200
    versions = [v for _, v in sent]
    assert versions == sorted(versions)


def test_coalescer_is_per_space_and_drops_stale_versions() -> None:
    c = Coalescer(rate=4)
    assert c.offer(snap(1, "a"), 0.0) is not None
    assert c.offer(snap(1, "b"), 0.0) is not None
    assert c.offer(snap(1, "a"), 1.0) is None  # not newer
    assert c.offer(snap(3, "a"), 0.1) is None
    assert c.offer(snap(2, "a"), 0.1) is None  # older than the held one
    assert [s["version"] for s in c.due(0.3)] == [3]


def test_fold_sums_fresh_edges_and_reactions() -> None:
    s = space()
    s = fold(s, [ListenerStats("e1", 100.0, listeners=10, reactions={"🔥": 2}),
                 ListenerStats("e2", 100.0, listeners=5, reactions={"🔥": 1, "bad": 9},
                               url="http://e2", capacity=50)],
             Counter({"👏": 3}), now=100.0)
    assert s.listeners == 15 and s.reactions == {"🔥": 3, "👏": 3}
    assert s.edges["e2"] == EdgeSeen(listeners=5, url="http://e2", capacity=50, at=100.0)
    s = fold(s, [ListenerStats("e1", 102.0, listeners=12)], Counter(), now=102.0)
    assert s.listeners == 17
    s = fold(s, [], Counter(), now=104.5)  # e2 silent for 4.5 s: gone
    assert s.listeners == 12 and set(s.edges) == {"e1"}
    s = fold(s, [ListenerStats("e1", 90.0, listeners=1)], Counter(), now=104.5)
    assert s.listeners == 12  # a late, older report changes nothing
    s = fold(s, [ListenerStats("e1", 104.5, listeners=-3, reactions={"🔥": -5})], Counter(),
             now=104.5)
    assert s.listeners == 0 and s.reactions["🔥"] == 3  # nothing counts below zero


def test_reaction_tally_hands_over_and_resets() -> None:
    t = ReactionTally()
    for _ in range(1000):
        t.add("s1", "🔥")
    assert t.take() == {"s1": Counter({"🔥": 1000})}
    assert t.take() == {}


def test_edges_ranked_least_loaded_first_full_last() -> None:
    reg = EdgeRegistry()
    reg.update(EdgeHeartbeat("a", 9.0, "http://a", listeners=90, capacity=100), 10.0)
    reg.update(EdgeHeartbeat("b", 9.0, "http://b", listeners=10, capacity=100), 10.0)
    reg.update(EdgeHeartbeat("c", 9.0, "http://c", listeners=100, capacity=100), 10.0)
    reg.update(EdgeHeartbeat("old", 0.0, "http://o", listeners=0, capacity=100), 1.0)
    ranked = rank_edges("s1", {}, reg.fresh(10.0), 10.0)
    assert [e["node"] for e in ranked] == ["b", "a", "c"]
    assert ranked[0]["ws"] == "http://b/ws/s1" and ranked[0]["ogg"] == "http://b/listen/s1.opus"


def test_token_bucket_allows_bursts_then_says_when() -> None:
    b = TokenBuckets(rate=5, burst=3)
    assert [b.take("x", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take("x", 0.0)
    assert abs(wait - 0.2) < 1e-9
    assert b.take("y", 0.0) == 0.0  # per identity
    assert b.take("x", 0.2) == 0.0


def test_token_buckets_forget_full_buckets_so_memory_follows_active_keys() -> None:
    b = TokenBuckets(rate=1, burst=2, sweep_min=10)
    for n in range(10_000):
        # Every key is new and takes once; each is full again 1 s after its take.
        assert b.take(f"k{n}", n * 0.01) == 0.0
        # ~100 keys are within one refill time at once; a sweep at most doubles that.
        assert len(b) <= 3 * 100 + 10
    # A refused key keeps its debt (it is not full, so no sweep forgets it).
    b2 = TokenBuckets(rate=1, burst=1, sweep_min=1)
    assert b2.take("x", 0.0) == 0.0 and b2.take("x", 0.0) > 0
    for n in range(50):
        b2.take(f"other{n}", 0.5)
    assert b2.take("x", 0.5) > 0
    assert b2.take("x", 2.0) == 0.0
