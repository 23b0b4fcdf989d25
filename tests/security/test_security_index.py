"""Space lists, creation budgets, expiry and client addresses, as an abuser would test them.

The list test runs the api in this process on a bus wrapped to count every call, so "a
list request makes O(1) bus calls" is counted, not timed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Served, running, start_townhall
from tests.waiting import until_async
from townhall.app import build_app
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus import Bus, NatsBus, subjects
from townhall.bus.embedded import EmbeddedNats
from townhall.context import Context
from townhall.room import rules
from townhall.room.snapshot import to_doc
from townhall.settings import Settings

PROBLEM = "application/problem+json"
BUS_CALLS = ("kv_get", "kv_keys", "kv_create", "kv_update", "kv_put", "kv_delete",
             "publish", "publish_durable", "request", "replay", "pull", "last_message")


def count_calls(bus: Bus) -> Counter[str]:
    """Wrap the bus's calls so each one is counted."""
    calls: Counter[str] = Counter()

    def wrap(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await fn(*args, **kwargs)
        return counted

    for name in BUS_CALLS:
        setattr(bus, name, wrap(name, getattr(bus, name)))
    return calls


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own: the bucket holds exactly what the test put."""
    server = EmbeddedNats(tmp_path / "nats")
    yield server.start()
    server.stop()


def doc(n: int, state: str, *, private: bool = False, host: str = "ada") -> dict[str, Any]:
    snap = to_doc(rules.create(f"{n:010d}", rules.Actor(host, host.title()),
                               title=f"Space {n}", private=private, now=1_000_000.0 + n))
    if state != "scheduled":
        snap |= {"state": "live", "started_at": 1_000_000.0 + n}
    if state == "ended":
        snap |= {"state": "ended", "ended_at": 2_000_000.0 + n}
    return snap


class InProcessApi:
    """The api role in this process, on a counting bus, reached over ASGI."""

    def __init__(self, bus: Bus, ctx: Context, http: httpx.AsyncClient,
                 calls: Counter[str], api: Any) -> None:
        self.bus, self.ctx, self.http, self.calls, self.api = bus, ctx, http, calls, api

    async def spaces(self, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.get("/api/v1/spaces", params=params, headers=headers)

    async def walk(self, state: str, limit: int, token: str | None = None) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(1000):
            params: dict[str, Any] = {"state": state, "limit": limit}
            if cursor:
                params["cursor"] = cursor
            r = await self.spaces(token, **params)
            assert r.status_code == 200, r.text
            seen += [s["id"] for s in r.json()["spaces"]]
            cursor = r.json()["next"]
            if cursor is None:
                return seen
        raise AssertionError("the cursor never ended")


@pytest.fixture
async def inproc(nats: str, tmp_path: Path) -> AsyncIterator[InProcessApi]:
    bus = await NatsBus.connect([nats])
    # 5,000 Spaces straight into the bucket (as other apis would have made them): most
    # ended, some live and scheduled, a few private.
    docs = [doc(n, "ended") for n in range(4900)]
    docs += [doc(n, "live", private=n % 10 == 0) for n in range(4900, 4950)]
    docs += [doc(n, "scheduled") for n in range(4950, 5000)]
    for at in range(0, len(docs), 250):
        await asyncio.gather(*(bus.kv_create(subjects.SPACES_BUCKET, d["id"],
                                             json.dumps(d).encode())
                               for d in docs[at:at + 250]))
    settings = Settings(data_dir=tmp_path / "data", roles=("api",), nats_urls=[nats],
                        ended_retention=0)  # these 1970 Spaces would expire at once
    settings.data_dir.mkdir(parents=True)
    calls = count_calls(bus)
    ctx = Context(settings=settings, bus=bus,
                  issuer=TokenIssuer(load_or_create_secret(settings.data_dir)))
    app = build_app(ctx)
    for hook in ctx.on_start:
        await hook()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield InProcessApi(bus, ctx, http, calls, app.state.api)
    for hook in reversed(ctx.on_stop):
        await hook()
    await bus.close()


async def test_a_list_request_costs_no_scan_of_5000_spaces(inproc: InProcessApi) -> None:
    inproc.calls.clear()
    first = await inproc.spaces(state="ended", limit=100)
    assert first.status_code == 200
    assert len(first.json()["spaces"]) == 100 and first.json()["next"]
    # Today's list read every key (5,000 gets); from the index it needs none at all.
    assert sum(inproc.calls.values()) <= 2, inproc.calls
    ended = await inproc.walk("ended", 100)
    assert len(ended) == len(set(ended)) == 4900          # every one, exactly once
    assert ended == sorted(ended, reverse=True)           # newest ended first
    live = await inproc.walk("live", 7)
    assert len(live) == 45 and all(int(s) % 10 for s in live)  # the private ones hidden
    assert len(await inproc.walk("scheduled", 100)) == 50
    assert sum(inproc.calls.values()) <= 2, inproc.calls
    default = await inproc.spaces(limit=100)
    assert [s["state"] for s in default.json()["spaces"]] == ["live"] * 45 + ["scheduled"] * 50


async def test_ended_spaces_leave_live_at_once(inproc: InProcessApi) -> None:
    host = inproc.ctx.issuer.mint("ada", "Ada")
    auth = {"Authorization": f"Bearer {host}"}
    mine = "0000004901"
    assert mine in await inproc.walk("live", 100)
    # This process's own write: gone from "live" in the answer to the very next request.
    ended = await inproc.http.post(f"/api/v1/spaces/{mine}/end", headers=auth)
    assert ended.status_code == 200
    assert mine not in await inproc.walk("live", 100)
    assert mine in [s["id"] for s in (await inproc.spaces(state="ended", limit=1)).json()[
        "spaces"]]
    # Another api's write (straight into the bucket): as soon as the watch delivers it.
    other = "0000004902"
    entry = await inproc.bus.kv_get(subjects.SPACES_BUCKET, other)
    assert entry is not None
    snap = json.loads(entry.value) | {"state": "ended", "ended_at": time.time()}
    await inproc.bus.kv_update(subjects.SPACES_BUCKET, other, json.dumps(snap).encode(),
                               entry.revision)

    async def gone() -> bool:
        return other not in await inproc.walk("live", 100)

    await until_async(gone, 10, "gone")
    # Deleted elsewhere: gone from the lists too.
    await inproc.bus.kv_delete(subjects.SPACES_BUCKET, "0000000007")

    async def deleted() -> bool:
        return "0000000007" not in await inproc.walk("ended", 100)

    await until_async(deleted, 10, "deleted")


async def test_expiry_is_idempotent_across_apis_and_survives_bad_entries(
        inproc: InProcessApi) -> None:
    # Another api deleted one of them first: this one's conditional delete loses quietly.
    first = await inproc.bus.kv_get(subjects.SPACES_BUCKET, "0000000005")
    assert first is not None
    await inproc.bus.kv_delete(subjects.SPACES_BUCKET, "0000000005", first.revision)
    # Ended 0-5 ended before this instant, and every scheduled one (never started).
    done = await inproc.api.expire_once(before=2_000_005.5)
    assert done in (55, 56)  # 56 if the other api's delete had not reached the index yet
    for n in [*range(6), *range(4950, 5000)]:
        assert await inproc.bus.kv_get(subjects.SPACES_BUCKET, f"{n:010d}") is None
        r = await inproc.http.get(f"/api/v1/spaces/{n:010d}")
        assert r.status_code == 404 and r.json()["type"] == "/problems/space-not-found"
    assert await inproc.bus.kv_get(subjects.SPACES_BUCKET, "0000000006") is not None
    assert await inproc.api.expire_once(before=2_000_005.5) == 0
    # A document nobody can read does not stop the watch: later writes still arrive.
    await inproc.bus.kv_put(subjects.SPACES_BUCKET, "garbage000", b"not json")
    await inproc.bus.kv_put(subjects.SPACES_BUCKET, "0000000006", json.dumps(
        doc(6, "ended") | {"ended_at": 9e9}).encode())

    async def moved_first() -> bool:
        page = (await inproc.spaces(state="ended", limit=1)).json()["spaces"]
        return [s["id"] for s in page] == ["0000000006"]

    await until_async(moved_first, 10, "moved first")
    assert (await inproc.spaces(state="scheduled")).json() == {"spaces": [], "next": None}


async def test_private_spaces_are_listed_to_their_people_only(inproc: InProcessApi) -> None:
    issuer = inproc.ctx.issuer
    private = [f"{n:010d}" for n in range(4900, 4950, 10)]
    assert not set(private) & set(await inproc.walk("live", 100))
    stranger = issuer.mint("eve", "Eve")
    assert not set(private) & set(await inproc.walk("live", 100, stranger))
    host = issuer.mint("ada", "Ada")
    assert set(private) <= set(await inproc.walk("live", 3, host))
    bound = issuer.mint("zed", "Zed", space=private[0], role="listener")
    seen = await inproc.walk("live", 100, bound)
    assert private[0] in seen and not set(private[1:]) & set(seen)


async def test_list_parameters_are_checked(inproc: InProcessApi) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "bad-parameters"), ({"limit": 101}, "bad-parameters"),
        ({"limit": "x"}, "bad-parameters"), ({"cursor": "!!"}, "bad-parameters"),
        ({"state": "gone"}, "bad-state")]
    for params, slug in cases:
        r = await inproc.spaces(**params)
        assert r.status_code in (400, 422), (params, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["type"] == f"/problems/{slug}", params
    # A cursor from one list is not taken by another.
    cursor = (await inproc.spaces(state="ended", limit=1)).json()["next"]
    r = await inproc.spaces(state="live", cursor=cursor)
    assert r.status_code == 400 and r.json()["type"] == "/problems/bad-parameters"
    assert len((await inproc.spaces(state="ended")).json()["spaces"]) == 50  # the default


# --- a real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_townhall(tmp_path_factory.mktemp("budget") / "data",
                       "--space-budget-per-address", "3/60", "--ended-retention", "2s")
    yield s
    s.stop()


def mint(s: Served, identity: str) -> str:
    return TokenIssuer(load_or_create_secret(s.data)).mint(identity, identity)


def test_space_creation_is_budgeted_per_identity(budgeted: Served) -> None:
    with budgeted.client(mint(budgeted, "prolific")) as c:
        made = [c.post("/api/v1/spaces", json={"title": f"S{n}"}) for n in range(5)]
        assert [r.status_code for r in made] == [201] * 5
        refused = c.post("/api/v1/spaces", json={"title": "one too many"})
    assert refused.status_code == 429 and refused.headers["content-type"].startswith(PROBLEM)
    assert refused.json()["type"] == "/problems/rate-limited"
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 60 and f"try again in {wait} s" in refused.json()["detail"]
    # Someone else still may.
    with budgeted.client(mint(budgeted, "someone-else")) as c:
        assert c.post("/api/v1/spaces", json={"title": "mine"}).status_code == 201


def test_space_creation_is_budgeted_per_client_address(budgeted: Served) -> None:
    def create(identity: str, address: str) -> httpx.Response:
        with budgeted.client(mint(budgeted, identity)) as c:
            return c.post("/api/v1/spaces", json={"title": "x"},
                          headers={"X-Forwarded-For": address})

    # Fresh identities cost nothing to mint (guest sessions): the address still counts.
    statuses = [create(f"sock{n}", "203.0.113.50").status_code for n in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert create("sock-other", "198.51.100.50").status_code == 201


def test_ended_and_stale_scheduled_spaces_expire(budgeted: Served) -> None:
    token = mint(budgeted, "expiring")
    with budgeted.client(token) as c:
        ended = c.post("/api/v1/spaces", json={"title": "short"}).json()["id"]
        live = c.post("/api/v1/spaces", json={"title": "on air"}).json()["id"]
        assert c.post(f"/api/v1/spaces/{ended}/start").status_code == 200
        assert c.post(f"/api/v1/spaces/{live}/start").status_code == 200
        assert c.post(f"/api/v1/spaces/{ended}/end").status_code == 200
        stale = c.post("/api/v1/spaces", json={"title": "never starts"}).json()["id"]
        assert c.get(f"/api/v1/spaces/{ended}").status_code == 200
        deadline = time.monotonic() + 20
        while c.get(f"/api/v1/spaces/{ended}").status_code != 404 \
                or c.get(f"/api/v1/spaces/{stale}").status_code != 404:
            assert time.monotonic() < deadline, "not expired in time"
            time.sleep(0.2)
        gone = c.get(f"/api/v1/spaces/{ended}")
        assert gone.json()["type"] == "/problems/space-not-found"
        listed = c.get("/api/v1/spaces", params={"state": "ended", "limit": 100}).json()
        assert ended not in [s["id"] for s in listed["spaces"]]
        assert c.get(f"/api/v1/spaces/{live}").json()["state"] == "live"  # live never


# --- client addresses ---------------------------------------------------------------------


def until_refused(call: Callable[[], httpx.Response], most: int = 100) -> list[int]:
    """Statuses of ``call`` until the first 429 (or ``most`` calls). The bucket refills
    while we call, so how many get in first depends on speed: only the refusal is sure."""
    statuses: list[int] = []
    while len(statuses) < most and 429 not in statuses:
        statuses.append(call().status_code)
    return statuses


def test_a_same_host_proxy_sending_forwarded_is_not_waved_through(budgeted: Served) -> None:
    """A reverse proxy on this machine connects from loopback; what it forwards (here
    RFC 7239 Forwarded only) is the client, and that client is counted."""
    def session() -> httpx.Response:
        return httpx.post(f"{budgeted.url}/api/v1/sessions", json={"name": "Crowd"},
                          headers={"Forwarded": "for=203.0.113.77;proto=https"}, timeout=10)

    statuses = until_refused(session)
    assert statuses[-1] == 429 and statuses.count(201) >= 30  # the burst, then refused
    limited = session()
    wait = int(limited.headers["Retry-After"])
    assert wait >= 1 and f"try again in {wait} s" in limited.json()["detail"]
    # Another client behind the same proxy is someone else.
    other = httpx.post(f"{budgeted.url}/api/v1/sessions", json={"name": "Other"},
                       headers={"Forwarded": "for=198.51.100.77"}, timeout=10)
    assert other.status_code == 201


def test_only_trusted_proxies_name_the_client(tmp_path: Path) -> None:
    """With the proxy elsewhere, a loopback caller's X-Forwarded-For is not believed: the
    made-up addresses all count as this one caller."""
    with running(tmp_path / "data", "--trusted-proxies", "192.0.2.0/24") as s:
        made_up = iter(range(1, 255))
        statuses = until_refused(lambda: httpx.post(
            f"{s.url}/api/v1/sessions", json={"name": "Spoof"}, timeout=10,
            headers={"X-Forwarded-For": f"203.0.113.{next(made_up)}"}))
        assert statuses[-1] == 429
        # This machine's own unproxied calls stay unlimited (the default open mode).
        assert httpx.post(f"{s.url}/api/v1/sessions", json={"name": "Me"},
                          timeout=10).status_code == 201


# --- the stage ----------------------------------------------------------------------------


async def test_the_stage_does_not_read_ended_spaces_every_second(nats: str,
                                                                  tmp_path: Path) -> None:
    """Ended Spaces used to cost the stage one KV read each, every second (idle CPU
    doubled with 500 of them); which Spaces are live now comes from a watch."""
    from townhall.stage.role import Stage

    bus = await NatsBus.connect([nats])
    for at in range(0, 2000, 250):
        await asyncio.gather(*(bus.kv_create(subjects.SPACES_BUCKET, d["id"],
                                             json.dumps(d).encode())
                               for d in (doc(n, "ended") for n in range(at, at + 250))))
    settings = Settings(data_dir=tmp_path, roles=("stage",), nats_urls=[nats])
    stage = Stage(Context(settings=settings, bus=bus,
                          issuer=TokenIssuer(load_or_create_secret(tmp_path))))
    calls = count_calls(bus)
    await stage.start()
    try:
        calls.clear()
        for _ in range(3):
            await stage.tend()
        assert sum(calls.values()) == 0, calls
        live = doc(9999, "live")
        await bus.kv_create(subjects.SPACES_BUCKET, live["id"], json.dumps(live).encode())

        async def seen() -> bool:
            return live["id"] in stage.live

        await until_async(seen, 10, "seen")
        assert set(stage.live) == {live["id"]}
    finally:
        await stage.stop()
        await bus.close()
