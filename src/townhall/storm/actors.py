"""Audience actors: reactions and requests to speak at a given rate, as guest sessions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

REACTION_EMOJI = ("👏", "❤️", "😂", "🔥", "💯")


async def _session(client: httpx.AsyncClient, name: str) -> str:
    resp = await client.post("/api/v1/sessions", json={"name": name})
    resp.raise_for_status()
    return str(resp.json()["token"])


async def reactions(client: httpx.AsyncClient, space: str, rate: float, until: float,
                    tally: Counter[str]) -> None:
    """POST reactions at `rate` per second until the monotonic deadline."""
    if rate <= 0:
        return
    token = await _session(client, "storm-reactor")
    headers = {"Authorization": f"Bearer {token}"}
    i = 0
    while time.monotonic() < until:
        emoji = REACTION_EMOJI[i % len(REACTION_EMOJI)]
        i += 1
        try:
            resp = await client.post(f"/api/v1/spaces/{space}/reactions",
                                     json={"emoji": emoji}, headers=headers)
            tally[f"reaction {resp.status_code}"] += 1
        except httpx.HTTPError as exc:
            tally[f"reaction {type(exc).__name__}"] += 1
        await asyncio.sleep(1 / rate)


async def requests_to_speak(client: httpx.AsyncClient, space: str, rate: float,
                            until: float, tally: Counter[str]) -> None:
    """New guests ask to speak at `rate` per second until the monotonic deadline."""
    if rate <= 0:
        return
    i = 0
    while time.monotonic() < until:
        i += 1
        try:
            token = await _session(client, f"storm-guest-{i}")
            resp = await client.post(f"/api/v1/spaces/{space}/actions",
                                     json={"action": "request"},
                                     headers={"Authorization": f"Bearer {token}"})
            tally[f"request {resp.status_code}"] += 1
        except httpx.HTTPError as exc:
            tally[f"request {type(exc).__name__}"] += 1
        await asyncio.sleep(1 / rate)
