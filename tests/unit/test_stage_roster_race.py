"""An offer checked by the api on a Space newer than the stage's roster waits for it.

The api authorizes a WHIP offer on the stored Space, and the stage learns of the change from
the state message that follows the write: a speaker who offers the moment the host approved
them could reach the stage first and be refused 403 although they are on stage.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from tests.fakebus import FakeBus
from tests.snapshots import space
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus.messages import WhipOffer, decode_whip_request, encode
from townhall.context import Context
from townhall.media.packager import Packager
from townhall.room.snapshot import Space
from townhall.settings import Settings
from townhall.stage.role import SpaceRun, Stage

NOT_SDP = "this is not an offer"  # refused 400 by the SDP check that follows the roster's


def stage(tmp_path: Path) -> Stage:
    settings = Settings(data_dir=tmp_path, roles=("stage",), node_id="stage-a")
    return Stage(Context(settings=settings, bus=cast(Any, FakeBus()),
                         issuer=TokenIssuer(load_or_create_secret(tmp_path))))


def roster(version: int, on_stage: list[str]) -> Space:
    return space(version=version, stage=[{"id": who, "name": who.title()} for who in on_stage])


def run_at(version: int, on_stage: list[str]) -> SpaceRun:
    return SpaceRun(cast(Any, FakeBus()), "sp1", roster(version, on_stage), Packager())


async def test_an_offer_waits_for_the_roster_it_was_authorized_on(tmp_path: Path) -> None:
    run = run_at(3, ["ada"])
    # The state message naming bob arrives just after the offer (the next loop turn).
    asyncio.get_running_loop().call_soon(
        run.apply, roster(4, ["ada", "bob"]))
    reply = await stage(tmp_path)._whip_reply(
        "sp1", run, WhipOffer("bob", "Bob", NOT_SDP, version=4))
    assert reply.status == 400  # past the roster check: the SDP check refused it


async def test_an_offer_is_still_refused_when_the_roster_never_names_them(
        tmp_path: Path) -> None:
    run = run_at(3, ["ada"])
    reply = await stage(tmp_path)._whip_reply(
        "sp1", run, WhipOffer("mallory", "M", NOT_SDP, version=3))
    assert reply.status == 403
    # An api claiming a newer version cannot hold the stage longer than the bound.
    loop = asyncio.get_running_loop()
    began = loop.time()
    reply = await stage(tmp_path)._whip_reply(
        "sp1", run, WhipOffer("mallory", "M", NOT_SDP, version=99))
    assert reply.status == 403
    assert loop.time() - began < 5


async def test_an_older_state_message_does_not_undo_a_newer_roster() -> None:
    run = run_at(5, ["ada", "bob"])
    assert run.apply(roster(4, ["ada"])) == []
    assert run.stage_ids == {"ada", "bob"}
    assert run.version == 5


def test_an_offer_from_an_older_api_carries_no_version() -> None:
    old = b'{"identity":"bob","name":"Bob","sdp":"v=0"}'
    offer = decode_whip_request(old)
    assert isinstance(offer, WhipOffer) and offer.version is None
    assert decode_whip_request(encode(WhipOffer("bob", "Bob", "v=0", version=7))) == \
        WhipOffer("bob", "Bob", "v=0", version=7)
