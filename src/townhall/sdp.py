"""The bounds a WHIP offer must keep before anything parses it as SDP, with no I/O.

aiortc parses an offer and builds a transceiver per ``m=`` section on the stage's event
loop, the same loop that runs every Space's mixer clock: its cost grows with the offer
(213 ``m=audio`` sections in 64 KB held the loop for up to 0.3 s). So the api and the stage
both check the text first, in time linear in a capped number of bytes: size, then lines,
then media sections. A browser's or OBS's audio+video offer is 3-12 KB, 60-200 lines and
2 media sections (measured in docs/stage.md); the caps leave room for that and no more.
"""

from __future__ import annotations

from townhall.problems import BadInput, TooLarge, Unprocessable

MAX_SDP_BYTES = 32 * 1024
MAX_SDP_LINES = 1024
MAX_LINE_CHARS = 1024
MAX_MEDIA = 4   # m= sections: audio + video, with room for a data channel or a second mic


def check_sdp(body: bytes) -> str:
    """The offer as text, or a typed refusal (BadInput, TooLarge, Unprocessable) only."""
    if len(body) > MAX_SDP_BYTES:
        raise TooLarge(f"SDP offers are capped at {MAX_SDP_BYTES} bytes",
                       slug="sdp-too-large", limit=MAX_SDP_BYTES)
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("the SDP offer is not UTF-8 text", slug="bad-sdp") from exc
    if not sdp.startswith("v=0"):
        raise BadInput("the body is not an SDP offer (it must start with v=0)", slug="bad-sdp")
    # splitlines() breaks on every separator a parser might (\r, \x1c, U+2028...), so no
    # section can hide from the count behind an unusual line ending.
    lines = sdp.splitlines()
    if len(lines) > MAX_SDP_LINES:
        raise TooLarge(f"SDP offers are capped at {MAX_SDP_LINES} lines",
                       slug="sdp-too-large", limit=MAX_SDP_BYTES)
    media = 0
    for line in lines:
        if len(line) > MAX_LINE_CHARS:
            raise TooLarge(f"SDP lines are capped at {MAX_LINE_CHARS} characters",
                           slug="sdp-too-large", limit=MAX_SDP_BYTES)
        if line.startswith("m="):
            media += 1
    if media > MAX_MEDIA:
        raise Unprocessable(f"an offer may carry at most {MAX_MEDIA} media sections",
                            slug="too-many-media")
    if not any(line.startswith("m=audio") for line in lines):
        raise Unprocessable("the offer has no audio", slug="no-audio")
    if "opus/48000" not in sdp.lower():
        raise Unprocessable("the offer does not offer Opus audio", slug="no-opus")
    return sdp
