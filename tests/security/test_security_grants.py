"""Issue 13's authorization findings as probes against a live `townhall serve`.

Each test here failed on the code before townhall.grants: private Spaces heard by any
token, a listener-role token acting as the host, blocks shed with a new guest session, a
Space-bound token reacting elsewhere, and names that carry control characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Served
from townhall.auth import TokenIssuer, load_or_create_secret

PROBLEM = "application/problem+json"


def mint(s: Served, identity: str, **kw: object) -> str:
    """A token from the server's own secret, as `townhall token` makes one."""
    return TokenIssuer(load_or_create_secret(s.data)).mint(identity, identity, **kw)  # type: ignore[arg-type]


def call(s: Served, method: str, path: str, token: str | None = None, body: object = None,
         **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{s.url}{path}", json=body, headers={**auth, **headers},
                         timeout=10)


def guest(s: Served, name: str = "Guest", address: str | None = None) -> tuple[str, str]:
    """A guest session; ``address`` = the client address a trusted proxy forwards."""
    headers = {"X-Forwarded-For": address} if address else {}
    r = call(s, "POST", "/api/v1/sessions", body={"name": name}, **headers)
    assert r.status_code == 201, r.text
    return str(r.json()["token"]), str(r.json()["identity"])


def act(s: Served, space: str, token: str, action: str, **body: object) -> httpx.Response:
    return call(s, "POST", f"/api/v1/spaces/{space}/actions", token,
                {"action": action, **body})


async def first_event(url: str) -> tuple[str, object]:
    """What a WebSocket join gets first: ("message", the message) or ("close", code)."""
    async with connect(url, open_timeout=30) as ws:
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                return "message", await ws.recv()
    return "close", ws.close_code


def ogg_status(s: Served, space: str, token: str | None) -> int:
    params = {"token": token} if token else {}
    with httpx.stream("GET", f"{s.url}/listen/{space}.opus", params=params, timeout=10) as r:
        if r.status_code != 200:
            assert r.headers["content-type"].startswith(PROBLEM)
        return r.status_code


def ws_url(s: Served, space: str, token: str | None) -> str:
    base = s.url.replace("http://", "ws://") + f"/ws/{space}"
    return f"{base}?token={token}" if token else base


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


async def test_a_private_space_is_silent_and_absent_to_every_token_not_granted_for_it(
        served: Served) -> None:
    host, _ = guest(served, "Host")
    space = served.live_space(host, private=True)
    stranger, _ = guest(served, "Stranger")
    # The "blocked person's fresh guest session" of the issue is such a stranger too.
    strangers = {
        "guest": stranger,
        "listener token for someone else": mint(served, "lis-other", role="listener"),
        "host-role token": mint(served, "someone", role="host"),
        "anonymous": None,
    }
    for what, token in strangers.items():
        kind, got = await first_event(ws_url(served, space, token))
        assert (kind, got) == ("close", 4404), (what, kind, got)
        assert ogg_status(served, space, token) == 404, what
    # The same answer as for no Space at all: existence does not leak.
    missing = call(served, "GET", "/api/v1/spaces/zzzzzzzzzz", stranger)
    hidden = call(served, "GET", f"/api/v1/spaces/{space}", stranger)
    assert (hidden.status_code, hidden.json()["type"]) == (
        missing.status_code, missing.json()["type"]) == (404, "/problems/space-not-found")
    for action in ("request", "withdraw", "accept", "dance"):
        r = act(served, space, stranger, action)
        assert (r.status_code, r.json()["type"]) == (404, "/problems/space-not-found"), r.text
    # Those it is for still get in.
    ticket = mint(served, "ticket-holder", role="listener", space=space)
    for token in (host, ticket):
        kind, got = await first_event(ws_url(served, space, token))
        assert kind == "message" and json.loads(got)["type"] == "hello"  # type: ignore[arg-type]


async def test_a_host_can_let_an_identity_into_a_private_space_and_out_again(
        served: Served) -> None:
    host, _ = guest(served, "Host")
    space = served.live_space(host, private=True)
    friend = mint(served, "friend-1", role="listener")
    assert ogg_status(served, space, friend) == 404
    assert act(served, space, host, "allow", identity="friend-1").status_code == 200
    assert ogg_status(served, space, friend) == 200
    assert call(served, "GET", f"/api/v1/spaces/{space}", friend).status_code == 200
    async with connect(ws_url(served, space, friend), open_timeout=30) as ws:
        async with asyncio.timeout(30):
            assert json.loads(await ws.recv())["type"] == "hello"
        assert act(served, space, host, "disallow", identity="friend-1").status_code == 200
        # Let out again: the connection it holds is closed too, not only the next join.
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
    assert ws.close_code == 4403
    assert ogg_status(served, space, friend) == 404
    r = act(served, space, friend, "allow", identity="friend-2")
    assert r.status_code == 404  # not let in: not even told the Space exists


def test_a_listener_role_token_with_the_hosts_identity_cannot_moderate_end_or_publish(
        served: Served) -> None:
    host = mint(served, "host-lr", role="host")
    space = served.live_space(host)
    bob, bob_id = guest(served, "Bob")
    assert act(served, space, bob, "request").status_code == 200
    fake = mint(served, "host-lr", role="listener")
    refused = [
        act(served, space, fake, "approve", identity=bob_id),
        act(served, space, fake, "add_cohost", identity=bob_id),
        act(served, space, fake, "remove", identity=bob_id, block=True),
        call(served, "POST", f"/api/v1/spaces/{space}/end", fake),
    ]
    for r in refused:
        assert r.status_code == 403 and r.json()["type"] == "/problems/insufficient-grant", \
            r.text
    r = httpx.post(f"{served.url}/whip/{space}", content=b"v=0\r\nm=audio 9 opus/48000\r\n",
                   headers={"Authorization": f"Bearer {fake}",
                            "Content-Type": "application/sdp"}, timeout=20)
    assert r.status_code == 403 and r.json()["type"] == "/problems/insufficient-grant", r.text
    snap = call(served, "GET", f"/api/v1/spaces/{space}").json()
    assert snap["state"] == "live" and [p["id"] for p in snap["stage"]] == ["host-lr"]
    assert [q["id"] for q in snap["requests"]] == [bob_id]
    # The same person with the host's own token may.
    assert act(served, space, host, "approve", identity=bob_id).status_code == 200


async def test_a_blocked_guests_new_session_from_the_same_network_stays_blocked(
        served: Served) -> None:
    host = mint(served, "host-bl", role="host")
    space = served.live_space(host)
    troll, troll_id = guest(served, "Troll", address="203.0.113.50")
    assert act(served, space, troll, "request").status_code == 200
    assert act(served, space, host, "remove", identity=troll_id, block=True).status_code == 200
    again, _ = guest(served, "Troll again", address="203.0.113.50")
    me = call(served, "GET", "/api/v1/me", again).json()
    assert me["guest"] is True and "net" not in me
    r = act(served, space, again, "request")
    assert r.status_code == 403 and r.json()["type"] == "/problems/blocked", r.text
    r = call(served, "POST", f"/api/v1/spaces/{space}/reactions", again, {"emoji": "👏"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/blocked", r.text
    assert ogg_status(served, space, again) == 403
    assert await first_event(ws_url(served, space, again)) == ("close", 4403)
    # Another network, and signed-in people behind the same one, are not caught by it.
    other, _ = guest(served, "Neighbour", address="198.51.100.77")
    assert act(served, space, other, "request").status_code == 200
    colleague = mint(served, "colleague", role="speaker")
    assert act(served, space, colleague, "request").status_code == 200
    # The network never shows: not in the snapshot, not in the token's visible claims.
    snap = call(served, "GET", f"/api/v1/spaces/{space}", host).text
    assert "_blocked" not in snap and "_nets" not in snap


def test_a_token_bound_to_one_space_cannot_react_or_act_in_another(served: Served) -> None:
    host = mint(served, "host-bound", role="host")
    mine, other = served.live_space(host), served.live_space(host)
    bound = mint(served, "bound-1", role="speaker", space=mine)
    r = call(served, "POST", f"/api/v1/spaces/{other}/reactions", bound, {"emoji": "👏"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/insufficient-grant", r.text
    assert act(served, other, bound, "request").status_code == 403
    r = call(served, "POST", f"/api/v1/spaces/{mine}/reactions", bound, {"emoji": "👏"})
    assert r.status_code == 202


async def test_signed_in_only_spaces_refuse_anonymous_and_guest_listeners(
        served: Served) -> None:
    host = mint(served, "host-sio", role="host")
    space = served.live_space(host, signed_in_only=True)
    g, _ = guest(served, "G")
    assert await first_event(ws_url(served, space, None)) == ("close", 4401)
    assert await first_event(ws_url(served, space, g)) == ("close", 4403)
    assert ogg_status(served, space, None) == 401 and ogg_status(served, space, g) == 403
    r = call(served, "POST", f"/api/v1/spaces/{space}/reactions", g, {"emoji": "👏"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/signed-in-only"
    member = mint(served, "member-1", role="listener")
    kind, _ = await first_event(ws_url(served, space, member))
    assert kind == "message"
    # The host turns it off: guests are welcome again (and the snapshot says so).
    r = act(served, space, host, "signed_in_only_off")
    assert r.status_code == 200 and r.json()["signed_in_only"] is False
    assert ogg_status(served, space, g) == 200


@pytest.mark.parametrize("body, slug", [
    ({"name": "Ada\u0000"}, "control-character"),
    ({"name": "\u001b[2J\u001b[HAdmin"}, "control-character"),
    ({"name": "\u202eevil"}, "bidi-control"),
    ({"name": "\u200b\u200b"}, "blank-text"),
    ({"name": "Z" + "\u0336" * 12}, "combining-marks"),
])
def test_session_names_refuse_control_bidi_blank_and_zalgo(served: Served,
                                                           body: dict[str, str],
                                                           slug: str) -> None:
    r = call(served, "POST", "/api/v1/sessions", body=body)
    assert r.status_code == 422 and r.json()["type"] == f"/problems/{slug}", r.text


def test_titles_invites_and_identities_are_checked(served: Served) -> None:
    host = mint(served, "host-text", role="host")
    r = call(served, "POST", "/api/v1/spaces", host, {"title": "Town\u2066hall"})
    assert r.status_code == 422 and r.json()["type"] == "/problems/bidi-control"
    r = call(served, "POST", "/api/v1/spaces", host, {"title": "ok", "description": "\x00"})
    assert r.status_code == 422 and r.json()["type"] == "/problems/control-character"
    space = served.live_space(host)
    r = act(served, space, host, "invite", identity="not an identity")
    assert r.status_code == 422 and r.json()["type"] == "/problems/bad-identity"
    r = act(served, space, host, "invite", identity="bob", name="\u0007Bob")
    assert r.status_code == 422 and r.json()["type"] == "/problems/control-character"
    assert act(served, space, host, "invite", identity="bob", name="Bob").status_code == 200
