"""WHIP offers are posted again while the answer is 503, and only then."""

from __future__ import annotations

import httpx

from townhall.client import whip


def answering(statuses: list[int], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1], text="v=0 answer")
    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://t")


async def test_503_is_retried_until_an_answer() -> None:
    seen: list[httpx.Request] = []
    async with answering([503, 503, 201], seen) as http:
        r = await whip.offer(http, "/whip/s", "tok", "v=0 offer", pause_s=0)
    assert r.status_code == 201 and len(seen) == 3
    assert seen[0].headers["content-type"] == "application/sdp"
    assert seen[0].headers["authorization"] == "Bearer tok" and seen[0].content == b"v=0 offer"


async def test_other_refusals_are_not_retried_and_tries_are_bounded() -> None:
    seen: list[httpx.Request] = []
    async with answering([403], seen) as http:
        assert (await whip.offer(http, "/whip/s", "t", "v=0", pause_s=0)).status_code == 403
    assert len(seen) == 1
    seen.clear()
    async with answering([503], seen) as http:
        r = await whip.offer(http, "/whip/s", "t", "v=0", tries=4, pause_s=0)
    assert r.status_code == 503 and len(seen) == 4
