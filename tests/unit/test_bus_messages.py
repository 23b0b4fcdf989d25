"""The messages that cross a process boundary: one encoder, one decoder, typed both ways."""

from __future__ import annotations

import json

import pytest

from townhall.bus.messages import (
    MessageError,
    StageHeartbeat,
    WhipLeave,
    WhipOffer,
    WhipReply,
    decode_heartbeat,
    decode_whip_reply,
    decode_whip_request,
    encode,
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
