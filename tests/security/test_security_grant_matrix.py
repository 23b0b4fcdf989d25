"""The grant matrix of docs/api.md, cell by cell, against a live `townhall serve`.

The tables are read from the page itself, so the documentation cannot drift from what the
server does: each row is a kind of token, each column an action with one probe (see the
page), each cell ✓ or the status and problem slug the server must answer.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import Served
from townhall.auth import TokenIssuer, load_or_create_secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
VARIANTS = {"Public Space": "public", "Private Space": "private",
            "Signed-in only (public)": "signed-in"}
# What ✓ answers, per probe (publish: the grant let it through to the offer check).
ALLOWED = {"read": 200, "listen": 200, "react": 202, "request": 200, "speak": 200,
           "moderate": 200, "host": 200, "publish": 422, "create": 201, "clip": 422}
NET = {"public": "198.51.100.1", "private": "198.51.100.2", "signed-in": "198.51.100.3"}


def matrix() -> dict[str, dict[str, dict[str, str]]]:
    """{variant: {token kind: {action: cell}}} from the page's grant matrix tables."""
    text = DOC.read_text()
    section = text.split("## Who may do what", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, dict[str, str]]] = {}
    for chunk in section.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in body.splitlines() if line.startswith("|")]
        head, rows = rows[0], [r for r in rows[2:]]
        tables[VARIANTS[title.strip()]] = {r[0]: dict(zip(head[1:], r[1:], strict=True))
                                           for r in rows}
    return tables


MATRIX = matrix()
CASES = [(variant, kind) for variant, rows in MATRIX.items() for kind in rows]


@dataclass
class Setup:
    """One Space of a variant with someone of every token kind."""

    space: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    host: str = ""


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


def _ok(r: httpx.Response, *want: int) -> httpx.Response:
    assert r.status_code in want, (r.request.method, r.request.url, r.status_code, r.text)
    return r


def _build(s: Served, variant: str) -> Setup:
    mint = TokenIssuer(load_or_create_secret(s.data)).mint
    tag = f"{variant[:3]}{secrets.token_hex(3)}"
    http = httpx.Client(base_url=s.url, timeout=10)

    def post(path: str, token: str | None, body: object = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return http.post(f"/api/v1{path}", json=body, headers={**auth, **(headers or {})})

    def act(token: str | None, action: str, who: str | None = None, **extra: object) -> None:
        _ok(post(f"/spaces/{space}/actions", token, {"action": action, "identity": who,
                                                     **extra}), 200)

    def guest(address: str | None = None) -> tuple[str, str]:
        headers = {"X-Forwarded-For": address} if address else {}
        r = _ok(post("/sessions", None, {"name": "Guest"}, headers), 201)
        return str(r.json()["token"]), str(r.json()["identity"])

    host = mint(f"host-{tag}", "Host", role="host")
    other = mint(f"other-{tag}", "Other", role="host")
    body = {"title": f"matrix {variant}", "private": variant == "private",
            "signed_in_only": variant == "signed-in"}
    space = _ok(post("/spaces", host, body), 201).json()["id"]
    elsewhere = _ok(post("/spaces", other, {"title": "elsewhere"}), 201).json()["id"]
    _ok(post(f"/spaces/{space}/start", host), 200)
    people = {k: mint(f"{k}-{tag}", k, role="speaker")
              for k in ("co", "st", "in", "bl")}
    for who in ("co", "st"):                  # on stage by invitation (works when private)
        act(host, "invite", f"{who}-{tag}")
        act(people[who], "accept")
    act(host, "add_cohost", f"co-{tag}")
    act(host, "allow", f"in-{tag}")
    act(host, "remove", f"bl-{tag}", block=True)
    # A guest from a network on record (it accepted an invitation), then blocked; its new
    # session comes from the same network.
    troll, troll_id = guest(NET[variant])
    act(host, "invite", troll_id)
    act(troll, "accept")
    act(host, "remove", troll_id, block=True)
    again, _ = guest(NET[variant])
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "guest": guest()[0],
        "listener-role": mint(f"lr-{tag}", "L", role="listener"),
        "speaker-role": mint(f"sr-{tag}", "S", role="speaker"),
        "host-role": mint(f"hr-{tag}", "H", role="host"),
        "bound here": mint(f"bh-{tag}", "B", role="speaker", space=space),
        "bound elsewhere": mint(f"be-{tag}", "E", role="speaker", space=elsewhere),
        "host": host,
        "co-host": people["co"],
        "on stage": people["st"],
        "let in": people["in"],
        "blocked": people["bl"],
        "blocked guest's new session": again,
        "host identity, listener role": mint(f"host-{tag}", "Host", role="listener"),
    }
    http.close()
    return Setup(space, tokens, host)


@pytest.fixture(scope="module")
def setups(served: Served) -> Callable[[str], Setup]:
    built: dict[str, Setup] = {}

    def get(variant: str) -> Setup:
        if variant not in built:
            built[variant] = _build(served, variant)
        return built[variant]

    return get


def probe(s: Served, setup: Setup, variant: str, token: str | None,
          action: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    space = setup.space
    with httpx.Client(base_url=s.url, timeout=10, headers=auth) as http:
        if action == "read":
            return http.get(f"/api/v1/spaces/{space}")
        if action == "listen":
            params = {"token": token} if token else {}
            with httpx.Client(base_url=s.url, timeout=10) as bare, \
                    bare.stream("GET", f"/listen/{space}.opus", params=params) as r:
                # A refusal's body is small; an admitted stream never ends: keep its head.
                body = r.read() if r.status_code != 200 else b""
                return httpx.Response(r.status_code, headers=r.headers, content=body)
        if action == "react":
            return http.post(f"/api/v1/spaces/{space}/reactions", json={"emoji": "👏"})
        if action == "create":
            return http.post("/api/v1/spaces", json={"title": "probe"})
        if action == "clip":  # a day in: never there, so ✓ is the rules' 422 clip-outside
            return http.post(f"/api/v1/spaces/{space}/clips",
                             json={"start": 86_400, "duration": 1})
        if action == "publish":
            return http.post(f"/whip/{space}", content=b"v=0\r\n",
                             headers={"Content-Type": "application/sdp"})
        action_body: dict[str, str] = {
            "request": {"action": "request"},
            "speak": {"action": "unmute"},
            "moderate": {"action": "invite", "identity": "probe-invitee"},
            "host": {"action": "signed_in_only_on" if variant == "signed-in"
                     else "signed_in_only_off"},
        }[action]
        r = http.post(f"/api/v1/spaces/{space}/actions", json=action_body)
        if action == "request" and r.status_code == 200:  # leave it as it was
            _ok(http.post(f"/api/v1/spaces/{space}/actions", json={"action": "withdraw"}),
                200)
        return r


@pytest.mark.parametrize("variant, kind", CASES, ids=[f"{v}-{k}" for v, k in CASES])
def test_the_server_answers_every_cell_of_the_grant_matrix(
        served: Served, setups: Callable[[str], Setup], variant: str, kind: str) -> None:
    setup = setups(variant)
    assert kind in setup.tokens, f"docs/api.md names a token kind the test does not know: {kind}"
    wrong = []
    for action, cell in MATRIX[variant][kind].items():
        r = probe(served, setup, variant, setup.tokens[kind], action)
        if cell == "✓":
            ok = r.status_code == ALLOWED[action]
        else:
            m = re.fullmatch(r"(\d{3}) ([a-z-]+)", cell)
            assert m, f"bad cell {cell!r}"
            ok = (r.status_code == int(m[1]) and r.headers.get("content-type", "").startswith(
                "application/problem+json") and r.json().get("type") == f"/problems/{m[2]}")
        if not ok:
            wrong.append((action, cell, r.status_code, r.text[:200]))
    assert not wrong, wrong


def test_the_matrix_covers_every_kind_and_action_the_issue_names() -> None:
    assert set(MATRIX) == {"public", "private", "signed-in"}
    kinds = set(MATRIX["public"])
    assert kinds == set(MATRIX["private"]) and kinds >= {
        "anonymous", "guest", "listener-role", "speaker-role", "host-role", "bound here",
        "bound elsewhere", "host", "co-host", "on stage", "blocked"}
    assert set(MATRIX["public"]["host"]) == set(ALLOWED)
