"""The recording's expiry sweep and signed links as plain functions, time passed in."""

from __future__ import annotations

from typing import Any

import pytest

from tests.snapshots import space
from townhall.problems import Unauthorized
from townhall.recording.retention import EXPIRED, due, is_due, keep_copy
from townhall.recording.tickets import MAX_TTL_S, Tickets, recording_tag
from townhall.room.snapshot import Space

DAY = 86400.0


def snap(sid: str, recording: Any, state: str = "ended") -> Space:
    return space(id=sid, state=state, recording=recording)


def ready(expires_at: float, **more: Any) -> dict[str, Any]:
    return {"state": "ready", "url": "/replay/x.opus", "ready_at": 1.0,
            "expires_at": expires_at} | more


def test_due_picks_ready_recordings_past_their_time_soonest_first() -> None:
    now = 100 * DAY
    spaces = [snap("aaaaaaaaaa", ready(now + 1)),             # one second to go
              snap("bbbbbbbbbb", ready(now - 5)),
              snap("cccccccccc", ready(now - 10)),
              snap("dddddddddd", ready(now - 50, state=EXPIRED)),  # already swept
              snap("eeeeeeeeee", True), snap("ffffffffff", False),
              snap("gggggggggg", True, state="live")]
    assert due(spaces, now) == ["cccccccccc", "bbbbbbbbbb"]
    assert due(spaces, now, limit=1) == ["cccccccccc"]
    assert due(spaces, now + 1) == ["cccccccccc", "bbbbbbbbbb", "aaaaaaaaaa"]
    assert due(spaces, now - 11) == []
    assert is_due(spaces[0], now + 1) and not is_due(spaces[0], now + 0.5)


def test_a_tiny_retention_is_due_a_moment_after_the_end() -> None:
    ended, keep = 1_000_000.0, 0.00001 * DAY  # --recording-days 0.00001: 0.864 s
    rec = snap("aaaaaaaaaa", ready(ended + keep))
    assert not is_due(rec, ended + 0.5)
    assert is_due(rec, ended + 1.0)


def test_disk_copies_are_kept_only_while_the_recording_may_be_heard() -> None:
    now = 10 * DAY
    assert keep_copy(snap("aaaaaaaaaa", ready(now + 1)), now)
    assert keep_copy(snap("aaaaaaaaaa", True, state="live"), now)   # live clips
    assert keep_copy(snap("aaaaaaaaaa", False, state="live"), now)  # unrecorded, live clips
    assert not keep_copy(snap("aaaaaaaaaa", ready(now - 1)), now)   # past its time
    assert not keep_copy(snap("aaaaaaaaaa", ready(now + 9, state=EXPIRED)), now)
    assert not keep_copy(snap("aaaaaaaaaa", False), now)            # deleted by the host
    assert not keep_copy(None, now)                                  # the Space is gone


KEY = b"k" * 32


def test_a_ticket_admits_its_space_and_recording_until_it_expires() -> None:
    tickets = Tickets(KEY)
    t, expires = tickets.mint("aaaaaaaaaa", "1700000000000", now=1000.0, ttl=600)
    assert expires == 1600
    assert tickets.check(t, "aaaaaaaaaa", now=1599.0) == "1700000000000"
    with pytest.raises(Unauthorized) as late:
        tickets.check(t, "aaaaaaaaaa", now=1600.0)
    assert late.value.instance_slug == "ticket-expired"


@pytest.mark.parametrize("forge", [
    lambda t: t,                                              # another Space's
    lambda t: "9" + t,                                        # a later expiry
    lambda t: t.replace(".1700000000000.", ".live."),         # another recording
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),        # a changed mac
    lambda t: "", lambda t: "..", lambda t: "x.y.z", lambda t: t.split(".", 1)[1]])
def test_a_ticket_is_useless_anywhere_else(forge: Any) -> None:
    tickets = Tickets(KEY)
    t, _ = tickets.mint("aaaaaaaaaa", "1700000000000", now=1000.0)
    space = "bbbbbbbbbb" if forge(t) == t else "aaaaaaaaaa"
    with pytest.raises(Unauthorized) as refused:
        tickets.check(forge(t), space, now=1001.0)
    assert refused.value.instance_slug == "ticket-invalid"
    with pytest.raises(Unauthorized):  # another server's key
        Tickets(b"o" * 32).check(t, "aaaaaaaaaa", now=1001.0)


def test_ticket_lifetimes_are_bounded_and_tags_follow_the_recording() -> None:
    _, expires = Tickets(KEY).mint("aaaaaaaaaa", "live", now=0.0, ttl=10**9)
    assert expires == MAX_TTL_S
    assert recording_tag(snap("aaaaaaaaaa", ready(5.0, ready_at=1.5))) == "1500"
    assert recording_tag(snap("aaaaaaaaaa", True, state="live")) == "live"
    with pytest.raises(ValueError):
        Tickets(b"short")
