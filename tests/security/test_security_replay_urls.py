"""Signed links to a private Space's recording (``?t=``, what ``<audio src>`` can carry):
minted only for who may listen, they play the recording, its clips and its HLS (live and
VOD) without a token, expire, and are useless for another Space or after the recording
changed; no answer to one lets a shared cache keep it."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Served
from tests.integration.test_recording import RATE, ffmpeg_pcm, peak_hz, speak_out
from tests.stages import speak
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
    speak_out(served, space, host, 440, 2)
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


def uris(playlist: str) -> list[str]:
    """Every URI a playlist lists: lines, and the URI= of maps, parts and hints."""
    lines = playlist.splitlines()
    return [ln for ln in lines if ln and not ln.startswith("#")] + [
        ln.split('URI="')[1].split('"')[0] for ln in lines if 'URI="' in ln]


def test_a_ticket_plays_a_private_spaces_hls_live_and_after_the_end(served: Served) -> None:
    host = served.session("Hedy")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Quiet", "private": True,
                                               "record": True}).json()["id"]
        other = c.post("/api/v1/spaces", json={"title": "Other", "private": True}).json()["id"]
        public = c.post("/api/v1/spaces", json={"title": "Open"}).json()["id"]
        for s in (space, public):
            c.post(f"/api/v1/spaces/{s}/start").raise_for_status()
        live = c.post(f"/api/v1/spaces/{space}/recording/ticket", params={"ttl": 3600})
        assert live.status_code == 200, live.text
        assert 3500 < live.json()["expires_at"] - time.time() <= 3600
        elsewhere = c.post(f"/api/v1/spaces/{other}/recording/ticket").json()["ticket"]
        opened = c.post(f"/api/v1/spaces/{public}/recording/ticket").json()["ticket"]
        too_long = c.post(f"/api/v1/spaces/{space}/recording/ticket", params={"ttl": 86400})
        assert too_long.status_code == 400
    t = live.json()["ticket"]
    base = f"{served.url}/hls/{space}"
    assert live.json()["hls"] == f"/hls/{space}/master.m3u8?t={t}"
    anyone = httpx.Client(timeout=15)  # no Authorization at all
    answers: list[httpx.Response] = []

    def get(url: str) -> httpx.Response:
        r = anyone.get(url)
        answers.append(r)
        return r

    speaker = speak(served, space, host, hz=660, seconds=60)
    try:
        def listing() -> str:
            r = get(f"{base}/index.m3u8?t={t}")
            return r.text if r.status_code == 200 and ".m4s" in r.text else ""

        playlist = until(listing, 60, "a live playlist by ticket")
        # The playlist hands the ticket on: a player asks for each URI as listed.
        listed = uris(playlist)
        assert listed and all(u.endswith(f"?t={t}") for u in listed), listed
        master = get(f"{base}/master.m3u8?t={t}")
        assert master.status_code == 200 and set(uris(master.text)) == {
            f"opus.m3u8?t={t}", f"aac.m3u8?t={t}"}
        segment = next(u for u in listed if u.split(".")[0].isdigit()
                       and u.split("?")[0].count(".") == 1)  # <k>.m4s, a whole segment
        for u in ("init.mp4?t=" + t, segment, f"aac.m3u8?t={t}"):
            assert get(f"{base}/{u}").status_code == 200, u
        # ffmpeg, with no token: the live playlist, its init and segments, all by ticket
        # (waiting until the newest segment is into the tone: the first are silence).
        def tone_by_ticket() -> bool:
            pcm = ffmpeg_pcm(f"{base}/index.m3u8?t={t}", "-live_start_index", "-1",
                             seconds=1)
            return len(pcm) >= RATE // 2 and abs(peak_hz(pcm[-RATE // 2:]) - 660) < 15

        until(tone_by_ticket, 60, "ffmpeg plays the tone by ticket")
        # Without it the private Space does not exist; another Space's ticket opens nothing.
        refused(get(f"{base}/index.m3u8"), 404, "space-not-found")
        refused(get(f"{base}/init.mp4"), 404, "space-not-found")
        for url in (f"{base}/index.m3u8?t={elsewhere}", f"{base}/{segment}"
                    .replace(f"?t={t}", f"?t={elsewhere}"), f"{base}/master.m3u8?t={elsewhere}",
                    f"{served.url}/hls/{other}/index.m3u8?t={t}",
                    f"{served.url}/hls/zzzzzzzzzz/init.mp4?t={t}"):
            refused(get(url), 401, "ticket-invalid")
    finally:
        speaker.terminate()
        speaker.wait(10)
    # A public Space's answer to a ticket is private too: the ticket is in the URL, which
    # a shared cache must not keep; the fast path's shared answer is not given to it.
    assert get(f"{served.url}/hls/{public}/init.mp4").headers["cache-control"].startswith(
        "public")
    ticketed = get(f"{served.url}/hls/{public}/init.mp4?t={opened}")
    assert ticketed.status_code == 200 and ticketed.headers["cache-control"].startswith(
        "private")

    with served.client(host) as c:
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
        until(lambda: isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"],
                                    dict), 60, "the recording is ready")
        vod_t = c.post(f"/api/v1/spaces/{space}/recording/ticket").json()["ticket"]
    # The live ticket was for the live Space; the recording needs one minted for it.
    refused(get(f"{base}/index.m3u8?t={t}"), 401, "ticket-invalid")
    vod = get(f"{base}/index.m3u8?t={vod_t}")
    assert vod.status_code == 200 and vod.text.endswith("#EXT-X-ENDLIST\n")
    assert all(u.endswith(f"?t={vod_t}") for u in uris(vod.text))
    pcm = ffmpeg_pcm(f"{base}/index.m3u8?t={vod_t}")
    assert len(pcm) >= RATE and abs(peak_hz(pcm[len(pcm) // 2:][:RATE]) - 660) < 15
    assert get(f"{base}/{uris(vod.text)[-1]}").status_code == 200

    # No answer to a ticket, nor to a request for a private Space, was ever shareable.
    shared = [(str(r.url), r.headers.get("cache-control")) for r in answers
              if public not in str(r.url)
              and "public" in r.headers.get("cache-control", "")]
    assert not shared, shared
    assert sum(r.status_code == 200 for r in answers) >= 8
    anyone.close()
