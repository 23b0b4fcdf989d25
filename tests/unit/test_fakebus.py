"""The in-memory Bus behaves as NATS does where the unit tests lean on it."""

from __future__ import annotations

import pytest

from tests.fakebus import FakeBus, matches
from townhall.bus import Bus, CasConflict, Change, Message


def test_wildcards_match_as_nats_does() -> None:
    assert matches("townhall.*.media", "townhall.abc.media")
    assert not matches("townhall.*.media", "townhall.abc.state")
    assert not matches("townhall.*", "townhall.a.b")
    assert matches("townhall.>", "townhall.a.b")
    assert not matches("townhall.>", "townhall")


async def test_subscribers_get_what_matches_until_they_leave() -> None:
    bus: Bus = FakeBus()  # the Protocol, with no cast: mypy checks the fake keeps up
    got: list[Message] = []

    async def on(msg: Message) -> None:
        got.append(msg)

    sub = await bus.subscribe("townhall.*.state", on)
    await bus.publish("townhall.a.state", b"1")
    await bus.publish("townhall.a.media", b"2")
    await sub.unsubscribe()
    await bus.publish("townhall.a.state", b"3")
    assert [m.data for m in got] == [b"1"]


async def test_requests_are_answered_by_a_responder() -> None:
    bus = FakeBus()

    async def echo(msg: Message) -> None:
        await bus.respond(msg.reply, msg.data.upper())

    await bus.subscribe("townhall.stage.whip.*", echo)
    assert (await bus.request("townhall.stage.whip.a", b"offer")).data == b"OFFER"
    with pytest.raises(TimeoutError):
        await bus.request("townhall.nobody", b"x", timeout=0.05)


async def test_compare_and_set_refuses_a_stale_revision_and_watches_see_every_write() -> None:
    bus = FakeBus()
    first = await bus.kv_create("spaces", "a", b"v1")
    with pytest.raises(CasConflict):
        await bus.kv_create("spaces", "a", b"again")
    seen: list[Change] = []
    watch = await bus.kv_watch("spaces", seen.append)
    second = await bus.kv_update("spaces", "a", b"v2", first)
    with pytest.raises(CasConflict):
        await bus.kv_update("spaces", "a", b"lost", first)
    await bus.kv_delete("spaces", "a", second)
    await watch.stop()
    await bus.kv_put("spaces", "b", b"unseen")
    assert [(c.key, c.value) for c in seen] == [("a", b"v1"), ("a", b"v2"), ("a", None)]
    assert await bus.kv_keys("spaces") == ["b"]
