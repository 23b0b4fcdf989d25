"""Who may listen, the `from` parameter, and the edge's reports on the bus."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.fakebus import FakeBus
from tests.snapshots import space
from townhall.auth import TokenIssuer
from townhall.bus.messages import decode_edge_heartbeat, decode_listener_stats
from townhall.edge.feed import Feed
from townhall.edge.gate import EdgeNode, may_listen, parse_from
from townhall.edge.hub import Hub
from townhall.edge.stats import publish_once
from townhall.room.snapshot import Person

ISSUER = TokenIssuer(b"k" * 32)


@pytest.mark.parametrize("raw, want", [(None, None), ("", None), ("0", 0), ("42", 42)])
def test_parse_from_accepts_sequence_numbers(raw: str | None, want: int | None) -> None:
    assert parse_from(raw) == want


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "١٢", "9" * 21, " 1"])
def test_parse_from_rejects_the_rest(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_from(raw)


def test_may_listen_codes() -> None:
    live = space(id="s", state="live", private=False)
    assert may_listen(live, "s", None, ISSUER) is None
    assert may_listen(None, "s", None, ISSUER).code == 4404  # type: ignore[union-attr]
    ended = may_listen(replace(live, state="ended"), "s", None, ISSUER)
    assert ended is not None and (ended.code, ended.status) == (4410, 410)
    # A private Space is no Space to whoever may not see it (existence does not leak).
    private = replace(live, private=True, host=Person("ada", "Ada"))
    assert may_listen(private, "s", None, ISSUER).code == 4404  # type: ignore[union-attr]
    assert may_listen(private, "s", "junk", ISSUER).code == 4404  # type: ignore[union-attr]
    other = ISSUER.mint("bob", "Bob", space="t", role="listener")
    assert may_listen(private, "s", other, ISSUER).code == 4404  # type: ignore[union-attr]
    guest = ISSUER.mint("g-1", "G", guest=True)
    assert may_listen(private, "s", guest, ISSUER).code == 4404  # type: ignore[union-attr]
    mine = ISSUER.mint("bob", "Bob", space="s", role="listener")
    assert may_listen(private, "s", mine, ISSUER) is None
    host = ISSUER.mint("ada", "Ada")
    assert may_listen(private, "s", host, ISSUER) is None
    # Signed-in only: a token is needed (4401), and not a guest's (4403).
    members = replace(live, signed_in_only=True, host=Person("ada", "Ada"))
    assert may_listen(members, "s", None, ISSUER).code == 4401  # type: ignore[union-attr]
    assert may_listen(members, "s", guest, ISSUER).code == 4403  # type: ignore[union-attr]
    assert may_listen(members, "s", ISSUER.mint("cy", "Cy", role="listener"), ISSUER) is None


async def test_the_edge_reports_typed_messages_on_its_subjects() -> None:
    bus = FakeBus()
    hub = Hub(bus)
    feed = hub.feeds["s1"] = Feed("s1", hub.ogg)
    feed.reactions["👏"] += 2
    edge = EdgeNode(hub, ISSUER, "n1", "https://e1", capacity=100)
    await publish_once(edge)
    sent = {m.subject: m.data for m in bus.published}
    assert set(sent) == {"townhall.s1.stats.n1", "townhall.edges.n1"}
    stats = decode_listener_stats(sent["townhall.s1.stats.n1"])
    assert (stats.node, stats.listeners, stats.reactions, stats.url, stats.capacity) == (
        "n1", 0, {"👏": 2}, "https://e1", 100)
    assert not feed.reactions  # each reaction is reported once
    beat = decode_edge_heartbeat(sent["townhall.edges.n1"])
    assert (beat.node, beat.url, beat.capacity, beat.listeners) == ("n1", "https://e1", 100, 0)
