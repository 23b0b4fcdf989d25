"""The Space index: list order, cursors, private Spaces and expiry, without a bus."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.snapshots import space
from townhall.problems import BadInput
from townhall.room.index import SpaceIndex, Viewer, decode_cursor, encode_cursor
from townhall.room.snapshot import Space


def snap(sid: str, state: str = "live", **kw: Any) -> Space:
    return space(doc_of(sid, state, **kw))


def doc_of(sid: str, state: str = "live", *, listeners: int = 0, created: float = 0.0,
           started: float | None = None, ended: float | None = None,
           scheduled: str | None = None, private: bool = False, host: str = "h",
           stage: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": sid, "state": state, "title": sid, "version": 1, "private": private,
            "host": {"id": host, "name": host}, "scheduled_start": scheduled,
            "created_at": created, "started_at": started, "ended_at": ended,
            "stage": [{"id": p, "name": p, "role": "speaker"} for p in (host, *stage)],
            "listeners": listeners, "_blocked": ["secret"]}


def ids(page: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in page]


ANYONE = Viewer()


def walk(index: SpaceIndex, states: tuple[str, ...], limit: int,
         viewer: Viewer = ANYONE) -> list[str]:
    out, cursor = [], None
    for _ in range(10_000):
        page, cursor = index.page(states, cursor, limit, viewer)
        out += ids(page)
        if cursor is None:
            return out
    raise AssertionError("the cursor never ended")


def test_each_state_has_its_order_and_items_carry_the_public_view() -> None:
    index = SpaceIndex()
    index.apply(snap("l-quiet", listeners=1, started=5), 1)
    index.apply(snap("l-big", listeners=900, started=1), 2)
    index.apply(snap("l-new", listeners=1, started=9), 3)
    index.apply(snap("s-later", "scheduled", scheduled="2030-01-02T00:00:00Z"), 4)
    index.apply(snap("s-soon", "scheduled", scheduled="2030-01-01T00:00:00+00:00"), 5)
    index.apply(snap("s-none", "scheduled", created=3), 6)
    index.apply(snap("e-old", "ended", ended=10), 7)
    index.apply(snap("e-new", "ended", ended=20), 8)
    assert ids(index.page(("live",), None, 50, Viewer())[0]) == ["l-big", "l-new", "l-quiet"]
    assert ids(index.page(("scheduled",), None, 50, Viewer())[0]) == [
        "s-soon", "s-later", "s-none"]
    assert ids(index.page(("ended",), None, 50, Viewer())[0]) == ["e-new", "e-old"]
    both, after = index.page(("live", "scheduled"), None, 50, Viewer())
    assert ids(both)[:3] == ["l-big", "l-new", "l-quiet"] and after is None
    assert "_blocked" not in both[0] and both[0]["title"] == "l-big"
    assert index.count("live") == 3 and index.count("ended") == 2


def test_a_change_moves_a_space_and_an_older_revision_is_ignored() -> None:
    index = SpaceIndex()
    assert index.apply(snap("a", "scheduled"), 5)
    assert index.apply(snap("a", "live", started=1), 6)
    assert not index.apply(snap("a", "scheduled"), 5)      # a late echo of the old write
    assert not index.apply(snap("a", "live", started=1), 6)  # the same write twice
    assert ids(index.page(("live",), None, 10, Viewer())[0]) == ["a"]
    assert index.apply(snap("a", "ended", ended=2), 7)
    assert ids(index.page(("live",), None, 10, Viewer())[0]) == []
    assert ids(index.page(("ended",), None, 10, Viewer())[0]) == ["a"]
    assert index.count("live") == 0


def test_pages_cover_everything_exactly_once_while_spaces_come_and_go() -> None:
    rng = random.Random(7)
    index = SpaceIndex()
    for n in range(1000):
        index.apply(snap(f"e{n:04}", "ended", ended=rng.choice([1.0, 2.0, 3.0])), n + 1)
    seen, cursor, rev = [], None, 5000
    for _ in range(100):
        page, cursor = index.page(("ended",), cursor, 37, Viewer())
        seen += ids(page)
        # Newcomers sort first (newest ended): they never shift what is still to come.
        rev += 1
        index.apply(snap(f"new{rev}", "ended", ended=100.0 + rev), rev)
        if cursor is None:
            break
    assert cursor is None
    assert sorted(seen) == [f"e{n:04}" for n in range(1000)]
    assert len(seen) == len(set(seen))
    index.remove("e0500", 99_999)
    assert len(walk(index, ("ended",), 100)) == 999 + (rev - 5000)


def test_the_default_list_runs_from_live_into_scheduled() -> None:
    index = SpaceIndex()
    for n in range(5):
        index.apply(snap(f"l{n}", listeners=n), n + 1)
        index.apply(snap(f"s{n}", "scheduled", created=n), n + 10)
    assert walk(index, ("live", "scheduled"), 3) == [
        "l4", "l3", "l2", "l1", "l0", "s0", "s1", "s2", "s3", "s4"]


def test_private_spaces_are_listed_only_to_their_people() -> None:
    index = SpaceIndex()
    index.apply(snap("pub", listeners=5), 1)
    index.apply(snap("mine", private=True, host="ada", stage=("bob",), listeners=9), 2)
    index.apply(snap("theirs", private=True, host="cy"), 3)
    assert walk(index, ("live",), 1) == ["pub"]
    assert walk(index, ("live",), 1, Viewer("eve")) == ["pub"]
    assert walk(index, ("live",), 1, Viewer("ada")) == ["mine", "pub"]
    assert walk(index, ("live",), 1, Viewer("bob")) == ["mine", "pub"]
    assert walk(index, ("live",), 5, Viewer("zed", "theirs")) == ["pub", "theirs"]
    # Bob leaves the stage: no longer his to see.
    index.apply(snap("mine", private=True, host="ada", listeners=9), 4)
    assert walk(index, ("live",), 5, Viewer("bob")) == ["pub"]
    index.remove("mine", 5)
    assert walk(index, ("live",), 5, Viewer("ada")) == ["pub"]


def test_a_space_deleted_here_stays_gone_until_the_bucket_says_so() -> None:
    index = SpaceIndex()
    index.apply(snap("x", "ended", ended=1), 4)
    assert index.remove("x")
    assert not index.apply(snap("x", "ended", ended=1), 4)  # the watch catching up
    assert index.get("x") is None
    assert not index.remove("x", 6)                           # the bucket's deletion
    assert index.apply(snap("x", "live"), 7)                  # and anything newer counts


def test_expiry_reads_the_oldest_first_and_never_live_ones() -> None:
    index = SpaceIndex()
    index.apply(snap("old", "ended", ended=10), 1)
    index.apply(snap("new", "ended", ended=50), 2)
    index.apply(snap("live", started=0), 3)
    index.apply(snap("stale", "scheduled", created=5), 4)
    index.apply(snap("later", "scheduled", created=5, scheduled="1970-01-01T00:01:40Z"), 5)
    assert index.expired(before=30) == [("stale", 4), ("old", 1)]
    assert [s for s, _ in index.expired(before=1000)] == ["stale", "old", "new", "later"]
    assert index.expired(before=1000, limit=1) == [("stale", 4)]
    index.remove("stale")
    assert index.expired(before=30) == [("old", 1)]


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", encode_cursor("live", (0, 0, "a"))])
def test_cursors_not_ours_are_bad_parameters(cursor: str) -> None:
    with pytest.raises(BadInput) as err:
        decode_cursor(cursor, ("ended",))
    assert err.value.instance_slug == "bad-parameters"


def test_private_candidates_include_invitees_and_allowed_and_pass_the_decision() -> None:
    index = SpaceIndex()
    doc = doc_of("p", private=True, host="ada") | {
        "invites": [{"id": "ivy", "name": "Ivy", "at": 1.0}], "_allowed": ["al"],
        "_blocked": ["bo"], "requests": [{"id": "rq", "name": "Rq", "at": 1.0}]}
    index.apply(space(doc), 1)
    assert walk(index, ("live",), 5, Viewer("ivy")) == ["p"]
    assert walk(index, ("live",), 5, Viewer("al")) == ["p"]
    item = index.get("p")
    # What the decision reads, not what it does not (requests, counts).
    assert item is not None and item.access is not None and item.access.blocked == ["bo"]
    assert item.access.requests == [] and item.access.invites[0].id == "ivy"
    page, _ = index.page(("live",), None, 5, Viewer("al"), admits=lambda i: False)
    assert page == []
    index.apply(snap("q"), 2)
    assert index.get("q") is not None and index.get("q").access is None  # type: ignore[union-attr]
