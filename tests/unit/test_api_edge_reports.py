"""The api folding the edges' reports from STATS: typed, and one that does not read is
dropped alone instead of failing the whole round (it would be pulled again and again)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from tests.fakebus import FakeBus
from townhall.api.role import Api
from townhall.auth import TokenIssuer
from townhall.bus import subjects
from townhall.bus.bus import Message
from townhall.bus.messages import EdgeHeartbeat, encode
from townhall.context import Context
from townhall.room import rules
from townhall.room.snapshot import decode as decode_space
from townhall.room.snapshot import encode as encode_space
from townhall.settings import Settings

SPACE = "k3v9x2m4qa"
ADA = rules.Actor("ada", "Ada")


async def api_with_live_space(tmp_path: Path) -> tuple[Api, FakeBus]:
    bus = FakeBus()
    api = Api(Context(Settings(data_dir=tmp_path), bus, TokenIssuer(b"k" * 32)))
    doc = rules.start(rules.create(SPACE, ADA, title="T", now=1.0), ADA, now=2.0)
    await bus.kv_create(subjects.SPACES_BUCKET, SPACE, encode_space(doc))
    return api, bus


@pytest.mark.parametrize("bad", [b"{", b'{"node": "e2", "listeners": "many", "at": 1}',
                                 b'{"node": "e2", "at": 1, "reactions": {"\\ud83d\\udd25": "x"}}'])
async def test_a_bad_report_is_dropped_and_the_good_ones_counted(
        tmp_path: Path, bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    api, bus = await api_with_live_space(tmp_path)
    # One edge's report as today's edges write it, then a broken one from another.
    await bus.publish_durable(subjects.stats(SPACE, "e1"), json.dumps(
        {"node": "e1", "listeners": 7, "reactions": {"🔥": 2}, "url": None,
         "capacity": 100, "at": time.time()}).encode())
    await bus.publish_durable(subjects.stats(SPACE, "e2"), bad)
    with caplog.at_level(logging.WARNING, logger="townhall.api.role"):
        await api._tally_once()
    entry = await bus.kv_get(subjects.SPACES_BUCKET, SPACE)
    assert entry is not None
    snap = decode_space(entry.value)
    assert snap.listeners == 7 and snap.reactions == {"🔥": 2}
    assert set(snap.edges) == {"e1"}
    assert "dropped an unreadable edge report" in caplog.text
    assert bus.stored == []  # both taken: the broken one is not pulled again


async def test_edge_heartbeats_are_kept_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    api, _ = await api_with_live_space(tmp_path)
    now = time.time()
    for data in (encode(EdgeHeartbeat("e1", now, "http://e1", capacity=10, listeners=9)),
                 # today's bytes
                 b'{"node": "e2", "url": "http://e2", "capacity": 10, "listeners": 1, "at": 5}',
                 b'{"node": "e3", "url": "http://e3", "capacity": "lots", "at": 5}', b"[]"):
        await api._on_edge(Message(subjects.edge_announce("e"), data, {}))
    fresh = api.registry.fresh(time.time())
    assert sorted(fresh) == ["e1", "e2"]
    assert (fresh["e2"]["url"], fresh["e2"]["listeners"]) == ("http://e2", 1)
