"""The messages that cross a process boundary: one encoder, one decoder, typed both ways."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import pytest

from townhall.bus.messages import (
    BusMessage,
    EdgeHeartbeat,
    Kick,
    Levels,
    ListenerStats,
    MessageError,
    SpaceEnded,
    SpeakerLink,
    StageHeartbeat,
    WhipLeave,
    WhipOffer,
    WhipReply,
    decode_control,
    decode_edge_heartbeat,
    decode_heartbeat,
    decode_levels,
    decode_listener_stats,
    decode_whip_reply,
    decode_whip_request,
    encode,
    levels_frame,
)


def test_whip_requests_have_the_documented_wire_form_and_come_back_typed() -> None:
    offer, leave = WhipOffer("ada", "Ada", "v=0\r\n"), WhipLeave("ada", "0123456789abcdef")
    assert json.loads(encode(offer)) == {"identity": "ada", "name": "Ada", "sdp": "v=0\r\n"}
    assert json.loads(encode(leave)) == {"op": "leave", "identity": "ada",
                                         "session": "0123456789abcdef"}
    assert decode_whip_request(encode(offer)) == offer
    assert decode_whip_request(encode(leave)) == leave


def test_a_reply_leaves_out_what_it_does_not_carry() -> None:
    assert json.loads(encode(WhipReply(200))) == {"status": 200, "detail": ""}
    busy = WhipReply(503, "busy", slug="stage-busy", retry_after=1)
    assert json.loads(encode(busy)) == {"status": 503, "detail": "busy", "slug": "stage-busy",
                                        "retry_after": 1}
    assert decode_whip_reply(encode(busy)) == busy
    answered = decode_whip_reply(b'{"status": 201, "session": "s", "sdp": "v=0"}')
    assert answered.ok and (answered.session, answered.sdp) == ("s", "v=0")
    assert not busy.ok


def test_a_heartbeat_round_trips_and_tolerates_newer_and_older_peers() -> None:
    beat = StageHeartbeat("st-1", ["a", "b"], speakers=2, jitter_target_ms=60.0, ticks=9,
                          late_frames=1, max_late_ms=2.5, fec_recovered=3, plc_frames=4,
                          lost_packets=5, at=123.0)
    assert decode_heartbeat(encode(beat)) == beat
    # A newer stage's extra field is ignored; an older one's missing counter is 0.
    assert decode_heartbeat(b'{"node": "n", "ticks": 3, "new": true}') == StageHeartbeat(
        "n", ticks=3)
    # JSON writes 60.0 as 60: still a float
    assert decode_heartbeat(b'{"node": "n", "max_late_ms": 60}').max_late_ms == 60.0


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b'{"ticks": 1}', b'{"node": ""}', b'{"node": 5}',
    b'{"node": "n", "ticks": "9"}', b'{"node": "n", "spaces": ["a", 1]}',
    b'{"node": "n", "ticks": true}'])
def test_a_malformed_heartbeat_is_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_heartbeat(data)


@pytest.mark.parametrize("data", [
    b'{"status": "201"}', b'{"detail": "no status"}', b'{"status": 503, "retry_after": "1"}',
    b'{"status": 201, "sdp": 5}'])
def test_a_malformed_reply_is_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_whip_reply(data)


@pytest.mark.parametrize("data", [
    b'{"identity": "a", "name": "A"}', b'{"op": "leave", "identity": "a"}',
    b'{"identity": 1, "name": "A", "sdp": "v=0"}'])
def test_a_malformed_request_is_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_whip_request(data)


# The bytes below are what processes released before these messages were typed put on the
# bus (``json.dumps`` with its default separators and ASCII escapes): a rolling restart
# mixes old and new processes, so both directions must keep working.


def test_control_messages_read_todays_bytes_and_write_the_same_objects() -> None:
    kick = decode_control(b'{"type": "kick", "identity": "ada", "block": true}')
    assert kick == Kick("ada", block=True)
    assert decode_control(b'{"type": "kick", "identity": "bo", "block": false}') == Kick("bo")
    assert decode_control(b'{"type":"ended"}') == SpaceEnded()
    assert encode(SpaceEnded()) == b'{"type":"ended"}'
    assert json.loads(encode(kick)) == {"type": "kick", "identity": "ada", "block": True}
    assert decode_control(encode(Kick("cy"))) == Kick("cy")


@pytest.mark.parametrize("data", [
    b"", b"{", b'"kick"', b'{"identity": "ada"}', b'{"type": "mute", "identity": "ada"}',
    b'{"type": "kick"}', b'{"type": "kick", "identity": ""}', b'{"type": "kick", "identity": 7}',
    b'{"type": "kick", "identity": "ada", "block": "yes"}'])
def test_an_unknown_or_malformed_control_message_is_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_control(data)


TODAYS_LEVELS = (b'{"space": "s1", "levels": {"ada": 0.42, "bo": 0}, "speaking": ["ada"], '
                 b'"at": 1764790000.5, "links": {"ada": {"quality": "good", "loss_pct": 0.0, '
                 b'"jitter_ms": 3.1}, "bo": {"quality": "poor", "loss_pct": 12.5, '
                 b'"jitter_ms": 61}}}')


def test_levels_read_todays_bytes_with_typed_links() -> None:
    levels = decode_levels(TODAYS_LEVELS)
    assert levels == Levels("s1", {"ada": 0.42, "bo": 0.0}, ["ada"], 1764790000.5, {
        "ada": SpeakerLink("good", 0.0, 3.1), "bo": SpeakerLink("poor", 12.5, 61.0)})
    assert isinstance(levels.links["bo"].jitter_ms, float)
    assert decode_levels(encode(levels)) == levels
    assert json.loads(encode(levels)) == json.loads(TODAYS_LEVELS)
    # An older stage sends no links; a newer one may grade with more fields.
    old = decode_levels(b'{"space": "s1", "levels": {"ada": 1.0}, "speaking": [], "at": 2}')
    assert old.links == {} and old.at == 2.0
    newer = decode_levels(b'{"space": "s", "levels": {}, "links": {"a": {"quality": "fair", '
                          b'"loss_pct": 3, "jitter_ms": 1, "rtt_ms": 80}}}')
    assert newer.links == {"a": SpeakerLink("fair", 3.0, 1.0)}


def test_the_levels_frame_is_the_bus_message_tagged_for_listeners() -> None:
    frame = json.loads(levels_frame(decode_levels(TODAYS_LEVELS)))
    assert frame == {"type": "levels", **json.loads(TODAYS_LEVELS)}


@pytest.mark.parametrize("data", [
    b'{"levels": {}}', b'{"space": "s", "levels": []}', b'{"space": "s", "levels": {"a": "x"}}',
    b'{"space": "s", "levels": {}, "speaking": "ada"}',
    b'{"space": "s", "levels": {}, "links": {"a": {"loss_pct": 1}}}',
    b'{"space": "s", "levels": {}, "links": {"a": "good"}}'])
def test_malformed_levels_are_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_levels(data)


def test_listener_stats_read_todays_bytes() -> None:
    today = (b'{"node": "e1", "listeners": 3, "reactions": {"\\ud83d\\udc4f": 2}, '
             b'"url": null, "capacity": 100, "at": 5.0}')
    stats = decode_listener_stats(today)
    assert stats == ListenerStats("e1", 5.0, listeners=3, reactions={"👏": 2}, capacity=100)
    assert decode_listener_stats(encode(stats)) == stats
    # url null is left out: today's readers take a missing url as None all the same.
    assert json.loads(encode(stats)) == {"node": "e1", "at": 5.0, "listeners": 3,
                                         "reactions": {"👏": 2}, "capacity": 100}
    with_url = ListenerStats("e1", 5.0, url="https://e1")
    assert json.loads(encode(with_url))["url"] == "https://e1"


def test_edge_heartbeats_read_todays_bytes() -> None:
    today = b'{"node": "n1", "url": "https://e1", "capacity": 100, "listeners": 7, "at": 5}'
    beat = decode_edge_heartbeat(today)
    assert beat == EdgeHeartbeat("n1", 5.0, "https://e1", capacity=100, listeners=7)
    assert json.loads(encode(beat)) == json.loads(today)
    assert decode_edge_heartbeat(encode(beat)) == beat


MALFORMED_EDGE_REPORTS = [
    b'{"listeners": 1, "at": 1}', b'{"node": "", "at": 1}', b'{"node": "e"}',
    b'{"node": "e", "at": 1, "listeners": "3"}', b'{"node": "e", "at": 1, "listeners": true}',
    b'{"node": "e", "at": 1, "url": 5}', b'{"node": "e", "at": "now"}']


@pytest.mark.parametrize("data", [*MALFORMED_EDGE_REPORTS,
                                  b'{"node": "e", "at": 1, "reactions": {"x": 1.5}}',
                                  b'{"node": "e", "at": 1, "reactions": ["x"]}'])
def test_malformed_listener_stats_are_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_listener_stats(data)


@pytest.mark.parametrize("data", MALFORMED_EDGE_REPORTS)
def test_malformed_edge_heartbeats_are_refused_whole(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode_edge_heartbeat(data)


EXAMPLES: dict[type, tuple[Any, Callable[[bytes], Any]]] = {
    WhipOffer: (WhipOffer("ada", "Ada", "v=0\r\n"), decode_whip_request),
    WhipLeave: (WhipLeave("ada", "s"), decode_whip_request),
    WhipReply: (WhipReply(201, session="s", sdp="v=0"), decode_whip_reply),
    StageHeartbeat: (StageHeartbeat("st", ["a"], cpu=0.5, draining=True), decode_heartbeat),
    Kick: (Kick("ada", block=True), decode_control),
    SpaceEnded: (SpaceEnded(), decode_control),
    Levels: (Levels("s", {"ada": 0.5}, ["ada"], 1.5, {"ada": SpeakerLink("good")}),
             decode_levels),
    ListenerStats: (ListenerStats("e", 1.0, 2, {"🔥": 1}, "http://e", 9),
                    decode_listener_stats),
    EdgeHeartbeat: (EdgeHeartbeat("e", 1.0, "http://e", 9, 2), decode_edge_heartbeat),
}


def test_every_bus_message_has_an_example_and_comes_back_equal() -> None:
    assert set(EXAMPLES) == set(get_args(BusMessage))  # a new message needs a line here
    for message, decode in EXAMPLES.values():
        assert decode(encode(message)) == message
