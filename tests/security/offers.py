"""SDP offers for the WHIP probes: a real browser's, and the bombs from issue 13."""

from __future__ import annotations

from pathlib import Path

# Chromium 156's audio+video offer with three simulcast layers, ICE gathered (non-trickle).
CHROMIUM_AV = (Path(__file__).parent / "chromium_av_offer.sdp").read_text()

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
PLAIN = HEAD + AUDIO  # passes the api's checks; the stage cannot negotiate it (no ICE/DTLS)


def bomb(sections: int, size: int = 0) -> str:
    """An offer with ``sections`` ``m=audio`` sections, padded with short attribute lines to
    about ``size`` bytes (issue 13's: 213 sections in 64 KB)."""
    pad = max(0, (size - len(HEAD)) // sections - len(AUDIO) - len("a=mid:000\r\n"))
    body = [HEAD]
    for i in range(sections):
        body.append(AUDIO + f"a=mid:{i}\r\n")
        left = pad
        while left > 12:
            line = "a=x-pad:" + "p" * (min(left, 200) - 10) + "\r\n"
            body.append(line)
            left -= len(line)
    return "".join(body)
