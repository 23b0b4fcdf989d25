"""The Spaces API against a real `townhall serve` on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from tests.conftest import Served, start_townhall

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Served]:
    """One townhall on the session's nats-server, so tests can watch the bus."""
    s = start_townhall(tmp_path_factory.mktemp("api") / "data", "--nats", nats_url)
    yield s
    s.stop()


def guest(s: Served, name: str) -> tuple[str, str]:
    r = httpx.post(f"{s.url}/api/v1/sessions", json={"name": name}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["token"], r.json()["identity"]


def live_space(s: Served, token: str, **extra: object) -> str:
    with s.client(token) as c:
        space = c.post("/api/v1/spaces", json={"title": "T", **extra}).json()["id"]
        assert c.post(f"/api/v1/spaces/{space}/start").status_code == 200
    return str(space)


def test_the_curl_tour_runs_end_to_end(served: Served) -> None:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "tour.sh"), served.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "tour ok" in out.stdout


def test_errors_are_precise_problems(served: Served) -> None:
    host, _ = guest(served, "Ada")
    other, _ = guest(served, "Eve")
    space = live_space(served, host)
    c = httpx.Client(base_url=served.url, timeout=10)
    auth = {"Authorization": f"Bearer {host}"}
    cases = [
        (c.post("/api/v1/spaces", content=b"{nope", headers={**auth,
                "Content-Type": "application/json"}), 400, "/problems/malformed-json"),
        (c.post("/api/v1/spaces", json={"title": "x"}), 401, "/problems/token-missing"),
        (c.post("/api/v1/spaces", json={"title": "x"},
                headers={"Authorization": "Bearer junk"}), 401, "/problems/token-invalid"),
        (c.post(f"/api/v1/spaces/{space}/end",
                headers={"Authorization": f"Bearer {other}"}), 403, "/problems/not-host"),
        (c.get("/api/v1/spaces/zzzzzzzzzz"), 404, "/problems/space-not-found"),
        (c.post(f"/api/v1/spaces/{space}/start", headers=auth), 409, "/problems/not-startable"),
        (c.post("/api/v1/spaces", content=b"{" + b" " * 70_000 + b"}",
                headers={**auth, "Content-Type": "application/json"}), 413, None),
        (c.post("/api/v1/spaces", json={"title": "x", "extra": 1}, headers=auth), 422,
         "/problems/invalid-body"),
        (c.post(f"/api/v1/spaces/{space}/reactions", json={"emoji": "💩"}, headers=auth),
         422, "/problems/unknown-reaction"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        if kind:
            assert response.json()["type"] == kind, response.text
    before = c.get(f"/api/v1/spaces/{space}").json()
    assert before["state"] == "live" and len(before["stage"]) == 1  # nothing harmed


def test_mutating_floods_get_429_with_retry_after(served: Served) -> None:
    host, _ = guest(served, "Flood")
    space = live_space(served, host)
    with served.client(host) as c:
        statuses = [c.post(f"/api/v1/spaces/{space}/actions",
                           json={"action": "mute"}).status_code for _ in range(40)]
        assert 429 in statuses
        limited = c.post(f"/api/v1/spaces/{space}/actions", json={"action": "mute"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["type"] == "/problems/rate-limited"
        assert c.get(f"/api/v1/spaces/{space}").json()["state"] == "live"


def test_snapshot_is_cacheable_by_version(served: Served) -> None:
    host, _ = guest(served, "Cache")
    space = live_space(served, host)
    c = httpx.Client(base_url=served.url, timeout=10)
    r = c.get(f"/api/v1/spaces/{space}")
    assert r.headers["etag"] == f'"{r.json()["version"]}"'
    assert r.headers["cache-control"] == "max-age=1"
    assert c.get(f"/api/v1/spaces/{space}",
                 headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    c.post(f"/api/v1/spaces/{space}/actions", json={"action": "mute"},
           headers={"Authorization": f"Bearer {host}"})
    assert c.get(f"/api/v1/spaces/{space}",
                 headers={"If-None-Match": r.headers["etag"]}).status_code == 200


def test_private_spaces_hide_from_strangers(served: Served) -> None:
    host, _ = guest(served, "Priv")
    stranger, _ = guest(served, "Stranger")
    space = live_space(served, host, private=True)
    assert httpx.get(f"{served.url}/api/v1/spaces/{space}").status_code == 404
    with served.client(stranger) as c:
        assert c.get(f"/api/v1/spaces/{space}").status_code == 404
        assert space not in [s["id"] for s in c.get("/api/v1/spaces").json()["spaces"]]
    with served.client(host) as c:
        assert c.get(f"/api/v1/spaces/{space}").status_code == 200


async def test_concurrent_changes_lose_no_update(served: Served) -> None:
    host, _ = guest(served, "Host")
    space = live_space(served, host)
    people = [guest(served, f"P{i}") for i in range(30)]
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
        rs = await asyncio.gather(*[
            c.post(f"/api/v1/spaces/{space}/actions", json={"action": "request"},
                   headers={"Authorization": f"Bearer {tok}"}) for tok, _ in people])
        assert [r.status_code for r in rs] == [200] * 30
        snap = (await c.get(f"/api/v1/spaces/{space}")).json()
        assert sorted(r["id"] for r in snap["requests"]) == sorted(i for _, i in people)
        # The host approves 12 while the rest withdraw, all at once.
        hauth = {"Authorization": f"Bearer {host}"}
        approve = [c.post(f"/api/v1/spaces/{space}/actions", headers=hauth,
                          json={"action": "approve", "identity": i}) for _, i in people[:12]]
        withdraw = [c.post(f"/api/v1/spaces/{space}/actions", json={"action": "withdraw"},
                           headers={"Authorization": f"Bearer {t}"}) for t, _ in people[12:]]
        rs = await asyncio.gather(*approve, *withdraw)
        assert all(r.status_code in (200, 429) for r in rs), [r.text for r in rs]
        done = [p for p, r in zip(people[:12], rs[:12], strict=True) if r.status_code == 200]
        snap = (await c.get(f"/api/v1/spaces/{space}")).json()
        assert {p["id"] for p in snap["stage"][1:]} == {i for _, i in done}
        assert snap["requests"] == [r for r in snap["requests"]
                                    if r["id"] in {i for _, i in people[:12]}]
        assert snap["version"] == 2 + 30 + len(done) + 18


async def test_state_is_published_at_most_four_times_a_second(served: Served,
                                                              nats_url: str) -> None:
    host, _ = guest(served, "Coal")
    space = live_space(served, host)
    nc = await nats.connect(nats_url)
    seen: list[tuple[float, dict[str, object]]] = []

    async def on(msg: nats.aio.msg.Msg) -> None:
        seen.append((time.monotonic(), json.loads(msg.data)))

    await nc.subscribe(f"townhall.{space}.state", cb=on)
    await nc.flush()
    people = [guest(served, f"C{i}") for i in range(50)]
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
        await asyncio.gather(*[
            c.post(f"/api/v1/spaces/{space}/actions", json={"action": "request"},
                   headers={"Authorization": f"Bearer {t}"}) for t, _ in people])
        final = (await c.get(f"/api/v1/spaces/{space}")).json()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not seen or seen[-1][1]["version"] !=  # noqa: ASYNC110
                                           final["version"]):
        await asyncio.sleep(0.05)
    await nc.close()
    assert seen and seen[-1][1]["version"] == final["version"]
    assert len(seen[-1][1]["requests"]) == 50  # type: ignore[arg-type]
    times = [t for t, _ in seen]
    # The api spaces its decisions 250 ms apart; arrivals jitter with a loaded event loop,
    # so count per one-second window with one message of slack.
    assert all(sum(1 for t in times if start <= t < start + 1.0) <= 5 for start in times)
    versions = [int(s["version"]) for _, s in seen]  # type: ignore[call-overload]
    assert versions == sorted(versions) and len(versions) < 50
    assert all("_blocked" not in s for _, s in seen)


def test_a_restart_finds_every_space_as_it_was(tmp_path: Path) -> None:
    first = start_townhall(tmp_path / "data")
    try:
        host, bob = guest(first, "Ada"), guest(first, "Bob")
        space = live_space(first, host[0])
        with first.client(bob[0]) as c:
            c.post(f"/api/v1/spaces/{space}/actions", json={"action": "request"})
        before = httpx.get(f"{first.url}/api/v1/spaces/{space}").json()
    finally:
        assert first.stop() == 0
    second = start_townhall(tmp_path / "data")
    try:
        after = httpx.get(f"{second.url}/api/v1/spaces/{space}").json()
        assert after == before
        with second.client(host[0]) as c:  # the same secret: old tokens still work
            r = c.post(f"/api/v1/spaces/{space}/actions",
                       json={"action": "approve", "identity": bob[1]})
            assert r.status_code == 200 and r.json()["version"] == before["version"] + 1
    finally:
        second.stop()


def test_closed_mode_refuses_guests(tmp_path: Path) -> None:
    s = start_townhall(tmp_path / "data", "--closed")
    try:
        r = httpx.post(f"{s.url}/api/v1/sessions", json={"name": "x"})
        assert r.status_code == 403 and r.json()["type"] == "/problems/closed"
    finally:
        s.stop()
