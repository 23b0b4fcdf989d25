"""The stage reads Spaces through the one codec (townhall.room.snapshot): a state message or
a ``spaces`` entry that is not a whole Space is logged and skipped, never half applied, and
never taken for "no longer live" (which would stop a live Space's audio)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from tests.fakebus import FakeBus
from tests.snapshots import space
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus import subjects
from townhall.bus.bus import Change, Message
from townhall.context import Context
from townhall.media.packager import Packager
from townhall.room.snapshot import Space, encode
from townhall.settings import Settings
from townhall.stage.role import SpaceRun, Stage

ID = "abcdefghij"
# Not a Space: no title, host, ... (what an older test wrote straight into the bucket).
PARTIAL = b'{"id": "abcdefghij", "state": "live", "version": 9, "stage": []}'
UNREADABLE = [b"not json", b"\xff\xfe", b"[]", PARTIAL,
              b'{"id": "abcdefghij", "state": "paused", "version": 9, "title": "T",'
              b' "description": "", "private": false, "created_at": 0,'
              b' "host": {"id": "ada", "name": "Ada"}}']


def roster(version: int, on_stage: list[str], state: str = "live") -> Space:
    return space(id=ID, version=version, state=state,
                 stage=[{"id": who, "name": who.title()} for who in on_stage])


def running(tmp_path: Path) -> tuple[Stage, SpaceRun]:
    """A stage that runs Space ``ID`` (version 3: ada and bob on stage); its clock idle."""
    settings = Settings(data_dir=tmp_path, roles=("stage",), node_id="stage-a")
    stage = Stage(Context(settings=settings, bus=cast(Any, FakeBus()),
                          issuer=TokenIssuer(load_or_create_secret(tmp_path))))
    snap = roster(3, ["ada", "bob"])
    run = SpaceRun(cast(Any, stage.bus), ID, snap, Packager())
    stage.live[ID], stage.runs[ID] = snap, run
    return stage, run


@pytest.mark.parametrize("data", UNREADABLE)
async def test_a_state_message_that_is_no_space_is_logged_and_skipped(
        tmp_path: Path, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    stage, run = running(tmp_path)
    with caplog.at_level(logging.WARNING, logger="townhall.stage.role"):
        await stage._on_state(Message(subjects.state(ID), data, {}))
    assert run.stage_ids == {"ada", "bob"} and run.version == 3
    assert ID in stage.runs and not stage.pending
    assert "dropped a state message" in caplog.text


@pytest.mark.parametrize("data", UNREADABLE)
def test_a_bucket_entry_that_is_no_space_leaves_what_the_stage_knew(
        tmp_path: Path, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    stage, _ = running(tmp_path)
    with caplog.at_level(logging.WARNING, logger="townhall.stage.role"):
        stage._on_space(Change(ID, data, 7))
    assert stage.live[ID].version == 3
    assert not stage._reapers  # not released: it is still live as far as we know
    assert "skipped a Space document" in caplog.text


async def test_whole_documents_are_applied(tmp_path: Path) -> None:
    stage, run = running(tmp_path)
    await stage._on_state(Message(subjects.state(ID), encode(roster(4, ["ada"])), {}))
    assert run.stage_ids == {"ada"} and run.version == 4
    # A live Space nobody runs is queued for the claimer, typed.
    other = space(id="klmnopqrst", version=2)
    stage._on_space(Change(other.id, encode(other), 8))
    assert stage.live[other.id] == other and stage.pending[other.id] == other
    # Deleted from the bucket: forgotten, and ours is stopped.
    stage._on_space(Change(ID, None, 9))
    assert ID not in stage.live and len(stage._reapers) == 1
    await next(iter(stage._reapers))
    assert ID not in stage.runs
