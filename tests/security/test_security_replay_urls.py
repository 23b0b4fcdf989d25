"""Signed links to a private Space's recording (``?t=``, what ``<audio src>`` can carry):
minted only for who may listen, they play the recording and its clips without a token,
expire, and are useless for another Space or after the recording changed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Served
from tests.integration.test_recording import speak
from tests.waiting import until
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.recording.tickets import Tickets

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


def refused(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{slug}", r.json()


def test_signed_links_play_expire_and_stay_with_their_space(served: Served) -> None:
    host, stranger = served.session("Ada"), served.session("Mallory")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Board", "private": True,
                                               "record": True}).json()["id"]
        other = c.post("/api/v1/spaces", json={"title": "Other", "private": True}).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
    speak(served, space, host, 440, 2)
    with served.client(host) as c:
        clip = c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0.5, "duration": 1})
        assert clip.status_code == 201, clip.text
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
        until(lambda: isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"],
                                    dict), 60, "the recording is ready")
        got = c.post(f"/api/v1/spaces/{space}/recording/ticket")
    assert got.status_code == 200, got.text
    link = got.json()
    assert 0 < link["expires_at"] - time.time() <= 3600
    t = link["ticket"]
    anyone = httpx.Client(base_url=served.url, timeout=10)  # no Authorization at all

    # The link plays the recording, its timeline and its clips, never for a shared cache.
    for url in (link["url"], link["m4a"], link["timeline"], f"{clip.json()['url']}?t={t}",
                f"{clip.json()['m4a']}?t={t}"):
        r = anyone.get(url)
        assert r.status_code == 200, (url, r.text)
        assert not r.headers.get("cache-control", "private").startswith("public"), url
    part = anyone.get(link["url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    # Without it, a stranger sees no such Space; nor may a stranger mint one.
    refused(anyone.get(f"/replay/{space}.opus"), 404, "space-not-found")
    refused(anyone.post(f"/api/v1/spaces/{space}/recording/ticket"), 401, "token-missing")
    with served.client(stranger) as c:
        refused(c.post(f"/api/v1/spaces/{space}/recording/ticket"), 404, "space-not-found")
    # A private Space's clip page is the unknown-Space page, not a preview of it.
    page = anyone.get(f"/c/{clip.json()['id']}")
    assert page.status_code == 404 and "Board" not in page.text
    assert page.text == anyone.get("/c/zzzzzzzzzz-0123456789").text

    # Useless for another Space, and the answer is the same whether that Space exists.
    for elsewhere in (other, "zzzzzzzzzz"):
        for url in (f"/replay/{elsewhere}.opus?t={t}",
                    f"/replay/{elsewhere}/timeline.json?t={t}"):
            refused(anyone.get(url), 401, "ticket-invalid")
    # Altered: a later expiry, another recording.
    expires, tag, mac = t.split(".")
    for forged in (f"{int(expires) + 3600}.{tag}.{mac}", f"{expires}.live.{mac}",
                   f"{expires}.{tag}.{mac[:-2]}"):
        refused(anyone.get(f"/replay/{space}.opus?t={forged}"), 401, "ticket-invalid")
    # Expired: minted with this server's own key, ten minutes ago.
    tickets = Tickets(TokenIssuer(load_or_create_secret(served.data)).derive_key("replay"))
    old, _ = tickets.mint(space, tag, now=time.time() - 1200)
    refused(anyone.get(f"/replay/{space}.opus?t={old}"), 401, "ticket-expired")
    fresh, _ = tickets.mint(space, tag, now=time.time())  # the same key: it works
    assert anyone.get(f"/replay/{space}.opus?t={fresh}").status_code == 200

    # Once the host deletes the recording, the link opens nothing.
    with served.client(host) as c:
        c.delete(f"/api/v1/spaces/{space}/recording").raise_for_status()
    refused(anyone.get(link["url"]), 401, "ticket-invalid")
    anyone.close()
