"""What an edge does with the bus messages of a Space it feeds: typed in, and an unreadable
or unknown one logged and dropped without touching a listener."""

from __future__ import annotations

import json
import logging

import pytest

from tests.fakebus import FakeBus
from tests.unit.test_edge_fastset import Socket, parse_ws
from townhall.bus import subjects
from townhall.bus.messages import Kick, SpaceEnded, encode
from townhall.edge.fanout import Outlet
from townhall.edge.hub import Hub
from townhall.edge.subscriber import Subscriber

SPACE = "s1"
# What a stage released before the messages were typed publishes (json.dumps' defaults).
TODAYS_LEVELS = (b'{"space": "s1", "levels": {"ada": 0.5}, "speaking": ["ada"], "at": 7.5, '
                 b'"links": {"ada": {"quality": "good", "loss_pct": 0.0, "jitter_ms": 2.0}}}')


async def listening(hub: Hub, identity: str) -> tuple[Subscriber, Socket]:
    feed = await hub.feed(SPACE)
    sub = Subscriber("ws", identity=identity)
    sock = Socket(sub)
    feed.attach(sub)
    feed.open(sub, Outlet(sock.write))
    return sub, sock


def texts(sock: Socket) -> list[dict[str, object]]:
    return [json.loads(f.data) for f in parse_ws(b"".join(sock.written))]


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"type": "mute", "identity": "ada"}',
                                  b'{"type": "kick"}', b'{"type": "kick", "identity": 5}'])
async def test_an_unreadable_control_message_is_logged_and_dropped(
        data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus()
    hub = Hub(bus)
    ada, _ = await listening(hub, "ada")
    with caplog.at_level(logging.WARNING, logger="townhall.edge.hub"):
        await bus.publish(subjects.control(SPACE), data)
    assert ada.close is None and "control message" in caplog.text


async def test_a_kick_closes_only_that_identity_and_the_end_closes_everyone() -> None:
    bus = FakeBus()
    hub = Hub(bus)
    ada, _ = await listening(hub, "ada")
    bo, _ = await listening(hub, "bo")
    # today's bytes from an older api, then the new encoder's
    await bus.publish(subjects.control(SPACE),
                      b'{"type": "kick", "identity": "ada", "block": false}')
    assert ada.close is not None and ada.close[0] == 4403 and bo.close is None
    await bus.publish(subjects.control(SPACE), encode(Kick("cy", block=True)))
    assert bo.close is None
    await bus.publish(subjects.control(SPACE), encode(SpaceEnded()))
    assert bo.close is not None and bo.close[0] == 4410


async def test_levels_reach_listeners_tagged_and_bad_ones_do_not(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus()
    hub = Hub(bus)
    _, sock = await listening(hub, "ada")
    with caplog.at_level(logging.WARNING, logger="townhall.edge.hub"):
        await bus.publish(subjects.levels(SPACE), b'{"space": "s1", "levels": "loud"}')
        await bus.publish(subjects.levels(SPACE), TODAYS_LEVELS)
    assert texts(sock) == [{"type": "levels", **json.loads(TODAYS_LEVELS)}]
    assert "unreadable levels" in caplog.text
