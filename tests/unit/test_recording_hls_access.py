"""The HLS origin's access cache: a Space's document is reused for its TTL at most, its
absence too, and a state message (``forget``) ends its reuse at once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.snapshots import space
from townhall.problems import NotFound
from townhall.recording.hls import AccessCache, kind_of
from townhall.room.snapshot import Space


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_documents_are_reused_for_the_ttl_only() -> None:
    clock = Clock()
    docs: dict[str, dict[str, Any]] = {"abc": {"id": "abc", "state": "live",
                                               "private": False}}
    fetched: list[str] = []

    async def fetch(name: str) -> Space:
        fetched.append(name)
        if name not in docs:
            raise NotFound("no", slug="space-not-found")
        return space(docs[name])

    cache = AccessCache(fetch, ttl=2.0, clock=clock)
    assert (await cache.get("abc")).private is False
    docs["abc"]["private"] = True                   # revoked at the source
    clock.now += 1.9
    assert (await cache.get("abc")).private is False and fetched == ["abc"]
    assert cache.fresh("abc") is not None
    clock.now += 0.2                                # past the TTL: asked again
    assert cache.fresh("abc") is None
    assert (await cache.get("abc")).private is True and fetched == ["abc", "abc"]
    docs["abc"]["state"] = "ended"
    cache.forget("abc")                             # a state message: at once
    assert (await cache.get("abc")).state == "ended" and len(fetched) == 3
    for _ in range(2):                              # no Space: remembered as none too
        with pytest.raises(NotFound):
            await cache.get("zzz")
    assert fetched.count("zzz") == 1


async def test_the_cache_is_bounded() -> None:
    async def fetch(name: str) -> Space:
        return space(id=name)

    cache = AccessCache(fetch, size=3, clock=Clock())
    for name in "abcde":
        await cache.get(name)
    assert [s for s in "abcde" if cache.fresh(s) is not None] == ["c", "d", "e"]


def test_where_hls_comes_from() -> None:
    assert kind_of(space(state="live", recording=True)) == "live"
    assert kind_of(space(state="ended", recording={"state": "ready"})) == "vod"
    assert kind_of(space(state="ended", recording=False)) is None
    assert kind_of(space(state="scheduled")) is None
