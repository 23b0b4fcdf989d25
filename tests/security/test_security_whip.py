"""WHIP offers are budgeted and bounded before they reach the stage's event loop (issue 13).

Pure parts first (the SDP check, the budgets, the stage's negotiation gate), then probes
against a live `townhall serve`: what reaches the stage is watched on its NATS subject, and
a well-formed offer sent afterwards marks when everything before it has been seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import Served
from tests.security.offers import CHROMIUM_AV, PLAIN, bomb
from tests.stages import stage_child
from townhall import sdp as sdpbounds
from townhall.api.whip import IDENTITY_BURST, SPACE_BURST, OfferBudget, stage_refusal
from townhall.auth import TokenIssuer
from townhall.bus import Bus, NatsBus, subjects
from townhall.bus.bus import Message
from townhall.bus.messages import WhipOffer, WhipReply, decode_whip_reply, encode
from townhall.problems import BadInput, Problem, TooLarge, TooMany, Unavailable, Unprocessable
from townhall.sdp import check_sdp
from townhall.sessionid import is_session_id, new_session_id
from townhall.stage.negotiation import NegotiationGate

# --- the SDP check ---------------------------------------------------------------------


def refusal(body: bytes) -> Problem:
    with pytest.raises(Problem) as info:
        check_sdp(body)
    return info.value


def test_a_real_browser_offer_with_video_and_simulcast_passes() -> None:
    assert check_sdp(CHROMIUM_AV.encode()) == CHROMIUM_AV


def test_issue_13s_bomb_is_refused_by_size_and_a_compact_one_by_its_sections() -> None:
    big = refusal(bomb(213, 64_000).encode())
    assert isinstance(big, TooLarge) and big.type == "/problems/sdp-too-large"
    assert big.extra["limit"] == sdpbounds.MAX_SDP_BYTES
    compact = bomb(213)
    assert len(compact) < sdpbounds.MAX_SDP_BYTES
    many = refusal(compact.encode())
    assert isinstance(many, Unprocessable) and many.type == "/problems/too-many-media"
    assert check_sdp(bomb(sdpbounds.MAX_MEDIA).encode())
    assert refusal(bomb(sdpbounds.MAX_MEDIA + 1).encode()).type == "/problems/too-many-media"


def test_lines_are_bounded_in_number_and_length() -> None:
    many = PLAIN + "a=x\r\n" * sdpbounds.MAX_SDP_LINES
    assert refusal(many.encode()).type == "/problems/sdp-too-large"
    long = PLAIN + "a=" + "x" * sdpbounds.MAX_LINE_CHARS + "\r\n"
    assert refusal(long.encode()).type == "/problems/sdp-too-large"


@pytest.mark.parametrize("sep", ["\n", "\r", "\x1c", "\x85", "\u2028", "\x0b"])
def test_sections_cannot_hide_behind_unusual_line_breaks(sep: str) -> None:
    # aiortc splits with str.splitlines(), which breaks on all of these.
    hidden = PLAIN + sep.join(["", *["m=audio 9 UDP/TLS/RTP/SAVPF 111"] * 5, ""])
    assert refusal(hidden.encode()).type == "/problems/too-many-media"


def test_what_is_not_an_opus_offer_is_refused_precisely() -> None:
    assert isinstance(refusal(b"\xff\xfe"), BadInput)
    assert refusal(b"hello").type == "/problems/bad-sdp"
    assert refusal(PLAIN.replace("m=audio", "m=video").encode()).type == "/problems/no-audio"
    assert refusal(PLAIN.replace("opus", "PCMU").encode()).type == "/problems/no-opus"


# --- budgets, gate, replies: pure objects ------------------------------------------------


def test_offer_budget_per_identity_then_per_space() -> None:
    budget = OfferBudget()
    for _ in range(int(IDENTITY_BURST)):
        budget.take("ada", "s1", 0.0)
    with pytest.raises(TooMany, match="from you") as info:
        budget.take("ada", "s1", 0.0)
    assert info.value.retry_after >= 1
    budget.take("ada", "s1", 2.0)  # refilled at the identity's rate
    others = OfferBudget()
    for i in range(int(SPACE_BURST)):
        others.take(f"p{i}", "s1", 0.0)
    with pytest.raises(TooMany, match="this Space"):
        others.take("fresh", "s1", 0.0)
    others.take("fresh", "s2", 0.0)  # another Space has its own budget


def test_negotiation_gate_bounds_the_stage_and_each_space() -> None:
    gate = NegotiationGate(per_stage=3, per_space=2)
    assert gate.enter("a") and gate.enter("a")
    assert not gate.enter("a")           # this Space is at its limit
    assert gate.enter("b")
    assert not gate.enter("c")           # the stage is at its limit
    gate.leave("a")
    assert gate.in_flight == 2 and gate.enter("c")
    for space in ("a", "b", "c"):
        gate.leave(space)
    assert gate.in_flight == 0 and not gate.busy


def test_session_ids_have_one_shape() -> None:
    assert is_session_id(new_session_id())
    for bad in ("", "a.b", "*", ">", "0123456789ABCDEF", "0123456789abcdef0", "../x"):
        assert not is_session_id(bad)


def test_stage_replies_become_problems_without_foreign_text() -> None:
    assert stage_refusal(WhipReply(201, session="x", sdp="v=0")) is None
    busy = stage_refusal(WhipReply(503, "busy", slug="stage-busy", retry_after=2))
    assert isinstance(busy, Unavailable) and busy.retry_after == 2
    assert busy.type == "/problems/stage-busy"
    odd = stage_refusal(WhipReply(500, "'NoneType' object has no attribute"))
    assert odd is not None and odd.status == 500 and "NoneType" not in odd.detail


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 300])
def test_a_bad_token_is_refused_without_the_jwt_library_s_words(token: str) -> None:
    with pytest.raises(Problem) as info:
        TokenIssuer(b"s" * 32).verify(token)
    assert info.value.detail == "the access token is invalid"


# --- against a live server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


@dataclass
class Watch:
    """What reaches the stages on ``townhall.stage.whip.>``."""

    bus: Bus
    seen: list[Message] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on(self, msg: Message) -> None:
        async with self.arrived:
            self.seen.append(msg)
            self.arrived.notify_all()

    async def until(self, count: int, bound_s: float = 20) -> None:
        """Wait until at least ``count`` messages have been seen."""
        async with asyncio.timeout(bound_s), self.arrived:
            await self.arrived.wait_for(lambda: len(self.seen) >= count)

    async def leased(self, space: str, bound_s: float = 30) -> None:
        """Wait until a stage holds the Space (offers before that are 503 no-stage)."""
        for _ in range(int(bound_s * 10)):
            if await self.bus.kv_get(subjects.LEASES_BUCKET, space) is not None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no stage took Space {space} within {bound_s}s")


@pytest.fixture
async def watch(served: Served) -> AsyncIterator[Watch]:
    _, nats = stage_child(served.proc.pid)
    bus = await NatsBus.connect([nats], setup=False, auth=served.nats_auth())
    w = Watch(bus)
    await bus.subscribe("townhall.stage.whip.>", w.on)
    await bus.flush()
    yield w
    await bus.close()


def live_space(served: Served, speakers: int = 0, host: str = "") -> tuple[str, list[str]]:
    """A live Space; the tokens of its host and ``speakers`` more people on its stage."""
    host = host or served.session("Host")
    tokens = [host]
    space = served.live_space(host, "whip")
    with served.client(host) as c:
        for i in range(speakers):
            token, ident = served.guest(f"S{i}")
            with served.client(token) as s:
                s.post(f"/api/v1/spaces/{space}/actions",
                       json={"action": "request"}).raise_for_status()
            c.post(f"/api/v1/spaces/{space}/actions",
                   json={"action": "approve", "identity": ident}).raise_for_status()
            tokens.append(token)
    return space, tokens


async def post(served: Served, space: str, token: str, sdp: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        return await http.post(f"/whip/{space}", content=sdp.encode(),
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/sdp"})


async def delete(served: Served, path: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        return await http.delete(path, headers={"Authorization": f"Bearer {token}"})


def is_problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{slug}"


async def test_bombs_are_refused_before_they_reach_the_stage(served: Served,
                                                             watch: Watch) -> None:
    space, (host,) = live_space(served)
    await watch.leased(space)
    is_problem(await post(served, space, host, bomb(213, 64_000)), 413, "sdp-too-large")
    is_problem(await post(served, space, host, bomb(213)), 422, "too-many-media")
    # A plain offer afterwards reaches the stage: once it is seen, nothing else came before.
    r = await post(served, space, host, PLAIN)
    await watch.until(1)
    assert [json.loads(m.data)["sdp"] for m in watch.seen] == [PLAIN]
    # The stage could not negotiate it (no ICE, no DTLS): a plain refusal, no exception text.
    is_problem(r, 422, "offer-refused")
    assert r.json()["detail"] == "the stage cannot use this offer"


async def test_a_burst_of_plain_offers_from_one_identity_is_rate_limited(
        served: Served, watch: Watch) -> None:
    space, (host,) = live_space(served)
    await watch.leased(space)
    answers = [await post(served, space, host, PLAIN) for _ in range(int(IDENTITY_BURST) + 10)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    is_problem(limited[0], 429, "rate-limited")
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "from you" in limited[0].json()["detail"]
    # Refused offers never reached the stage.
    await watch.until(len(answers) - len(limited))
    assert len(watch.seen) == len(answers) - len(limited)


async def test_a_space_has_its_own_budget_across_identities(served: Served,
                                                            watch: Watch) -> None:
    per = int(IDENTITY_BURST) - 1  # each identity stays within its own budget
    space, tokens = live_space(served, speakers=4)
    await watch.leased(space)
    # Margin for the refill (1 a second) while the offers go out one by one.
    assert per * len(tokens) >= SPACE_BURST + 25
    answers = [await post(served, space, t, PLAIN) for _ in range(per) for t in tokens]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    assert "this Space" in limited[0].json()["detail"]
    assert int(limited[0].headers["retry-after"]) >= 1
    other, (host,) = live_space(served)  # another Space is not affected
    await watch.leased(other)
    is_problem(await post(served, other, host, PLAIN), 422, "offer-refused")


@pytest.mark.parametrize("space,session", [
    ("bad id", "0123456789abcdef"),
    ("a.b", "0123456789abcdef"),
    ("*", "0123456789abcdef"),
    ("%3E", "0123456789abcdef"),
    ("VALIDSPACE", "0123456789abcdef"),
    ("LIVE", "x y"),
    ("LIVE", "a.b.c"),
    ("LIVE", "*"),
    ("LIVE", "%3E"),
    ("LIVE", "0123456789ABCDEF"),
])
async def test_delete_with_a_bad_space_or_session_is_404_and_never_reaches_nats(
        served: Served, watch: Watch, space: str, session: str) -> None:
    live, (host,) = live_space(served)
    await watch.leased(live)
    if space == "LIVE":
        space = live
    r = await delete(served, f"/whip/{space}/{session}", host)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] in ("/problems/space-not-found", "/problems/no-session")
    # A well-formed leave afterwards reaches the stage: once it is seen, it is the only one.
    marker = await delete(served, f"/whip/{live}/0123456789abcdef", host)
    await watch.until(1)
    assert [m.subject for m in watch.seen] == [subjects.whip(live)]
    is_problem(marker, 404, "no-session")  # the stage knows no such session


async def test_the_stage_checks_offers_itself(served: Served, watch: Watch) -> None:
    """An offer that reaches the stage without the api's check (another api, a bug) is still
    refused by the stage, with the same precise problem."""
    host, identity = served.guest("Host")
    space, _ = live_space(served, host=host)
    await watch.leased(space)
    for sdp, status, slug in ((bomb(213), 422, "too-many-media"),
                                  (bomb(213, 64_000), 413, "sdp-too-large")):
        payload = encode(WhipOffer(identity, "Host", sdp))
        for _ in range(20):  # 503 while the stage starts the Space's clock after its lease
            reply = decode_whip_reply((await watch.bus.request(subjects.whip(space), payload,
                                                               timeout=15)).data)
            if reply.status != 503:
                break
            await asyncio.sleep(0.5)
        assert (reply.status, reply.slug) == (status, slug), reply
