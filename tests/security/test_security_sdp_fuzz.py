"""Fuzzing the SDP check that guards the stage's loop: whatever arrives, it answers with a
typed refusal or an offer within the bounds, and quickly (hypothesis' deadline per example).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.offers import CHROMIUM_AV, bomb
from townhall import sdp as sdpbounds
from townhall.problems import BadInput, TooLarge, Unprocessable
from townhall.sdp import check_sdp

TYPED = (BadInput, TooLarge, Unprocessable)
FUZZ = settings(max_examples=300, deadline=250,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LINES = CHROMIUM_AV.split("\r\n")
BREAKS = st.sampled_from(["\r\n", "\n", "\r", "\x1c", "\x85", "\u2028", "\x0b", "\x00"])


def holds(body: bytes) -> None:
    """check_sdp either refuses with a typed problem or returns an offer within bounds."""
    try:
        sdp = check_sdp(body)
    except TYPED:
        return
    lines = sdp.splitlines()
    assert len(body) <= sdpbounds.MAX_SDP_BYTES
    assert len(lines) <= sdpbounds.MAX_SDP_LINES
    assert all(len(line) <= sdpbounds.MAX_LINE_CHARS for line in lines)
    assert sum(line.startswith("m=") for line in lines) <= sdpbounds.MAX_MEDIA
    assert any(line.startswith("m=audio") for line in lines)


@FUZZ
@given(chunk=st.binary(max_size=512), times=st.integers(1, 300), prefix=st.booleans())
def test_arbitrary_bytes(chunk: bytes, times: int, prefix: bool) -> None:
    holds((b"v=0\r\n" if prefix else b"") + chunk * times)


@FUZZ
@given(text=st.text(max_size=400), times=st.integers(1, 200), sep=BREAKS)
def test_arbitrary_text_after_a_valid_head(text: str, times: int, sep: str) -> None:
    holds(("v=0" + sep + "m=audio 9 RTP 111" + sep + "a=rtpmap:111 opus/48000/2" + sep
           + text * times).encode("utf-8", "surrogatepass"))


@st.composite
def mutated_offer(draw: st.DrawFn) -> bytes:
    """The real browser offer with lines dropped, repeated, replaced and rejoined."""
    lines = list(LINES)
    for _ in range(draw(st.integers(0, 12))):
        at = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "replace", "media"]))
        if op == "drop" and len(lines) > 1:
            del lines[at]
        elif op == "repeat":
            lines[at:at] = [lines[at]] * draw(st.integers(1, 400))
        elif op == "replace":
            lines[at] = draw(st.text(max_size=80)) * draw(st.integers(1, 40))
        else:
            lines[at:at] = [draw(st.sampled_from(["m=audio 9 UDP/TLS/RTP/SAVPF 111",
                                                   "m=video 9 UDP/TLS/RTP/SAVPF 96",
                                                   "m=application 9 DTLS/SCTP 5000"]))]
    return draw(BREAKS).join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(body=mutated_offer())
def test_mutated_real_offers(body: bytes) -> None:
    holds(body)


@FUZZ
@given(sections=st.integers(1, 400), size=st.integers(0, 70_000))
def test_bombs_of_every_shape(sections: int, size: int) -> None:
    holds(bomb(sections, size).encode())
