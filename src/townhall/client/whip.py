"""Publishing to a Space's stage over WHIP (RFC 9725), for scripts and benchmarks."""

from __future__ import annotations

import asyncio

import httpx


async def offer(http: httpx.AsyncClient, url: str, token: str, sdp: str, *,
                tries: int = 30, pause_s: float = 0.5) -> httpx.Response:
    """POST an SDP offer to ``url`` (``/whip/<space>``) as ``token``, again while the
    answer is 503 (no stage holds the Space yet: just started, or a takeover under way);
    returns the last response (201 carries the answer and its ``Location``)."""
    for attempt in range(tries):
        r = await http.post(url, content=sdp, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/sdp"})
        if r.status_code != 503 or attempt == tries - 1:
            return r
        await asyncio.sleep(pause_s)
    raise ValueError("tries must be at least 1")
