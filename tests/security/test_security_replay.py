"""A private Space's recording, clips and HLS follow the Space's grants, and no shared cache
may keep them: strangers get the same 404 as for a Space that does not exist."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Served
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


def test_private_recording_is_for_its_people_only(served: Served, tmp_path: Path) -> None:
    host, stranger = served.session("Ada"), served.session("Mallory")
    auth = {"Authorization": f"Bearer {host}"}
    space = served.live_space(host, "Board", private=True, record=True)
    with served.client(host) as c:
        # Live HLS for the host proves program chunks exist (the stage took the Space).
        until(lambda: c.get(f"/hls/{space}/index.m3u8").status_code == 200, 60,
                 "live segments")
        live = c.get(f"/hls/{space}/index.m3u8")
        assert live.headers["cache-control"].startswith("private")
        # Live segments and LL-HLS parts too: a shared cache must not keep them.
        until(lambda: c.get(f"/hls/{space}/opus.m3u8").status_code == 200, 60,
                 "live segments")
        media = c.get(f"/hls/{space}/opus.m3u8").text
        part = media.split('#EXT-X-PART:')[1].split('URI="')[1].split('"')[0]
        newest = [ln for ln in media.splitlines() if ln.endswith(".m4s")
                  and not ln.startswith("#")][-1]
        for url in (f"/hls/{space}/opus.m3u8", f"/hls/{space}/{part}",
                    f"/hls/{space}/{newest}", f"/hls/{space}/aac-init.mp4"):
            got = c.get(url)
            assert got.status_code == 200, (url, got.text)
            assert got.headers["cache-control"].startswith("private"), url
            assert "public" not in got.headers["cache-control"], url
            assert httpx.get(served.url + url, timeout=10).status_code == 404, url
        clip = c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 1})
        assert clip.status_code == 201, clip.text
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
        until(lambda: isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"],
                                    dict), 60, "the recording is ready")
    urls = [f"/replay/{space}.opus", clip.json()["url"], f"/hls/{space}/index.m3u8",
            f"/hls/{space}/master.m3u8",
            f"/hls/{space}/opus.m3u8", f"/hls/{space}/init.mp4", f"/hls/{space}/0.m4s",
            f"/hls/{space}/aac-init.mp4"]
    for url in urls:
        mine = httpx.get(served.url + url, headers=auth, timeout=10)
        assert mine.status_code == 200, (url, mine.text)
        assert mine.headers["cache-control"].startswith("private"), url  # never a CDN's
        for who in ({}, {"Authorization": f"Bearer {stranger}"}):
            r = httpx.get(served.url + url, headers=who, timeout=10)
            assert r.status_code == 404, (url, who, r.status_code)
            assert r.json()["type"] == "/problems/space-not-found"
    with httpx.Client(base_url=served.url, timeout=10,
                      headers={"Authorization": f"Bearer {stranger}"}) as c:
        r = c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 1})
        assert r.status_code == 404
        assert c.delete(f"/api/v1/spaces/{space}/recording").status_code == 404


def fast_answers(served: Served) -> float:
    for line in httpx.get(f"{served.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("townhall_hls_fast_answers_total "):
            return float(line.split()[1])
    return 0.0


def test_a_revoked_grant_stops_cached_hls_within_the_ttl(served: Served) -> None:
    """Segments answered before are repeated without routing (the fast path), but only
    while the Space's grants allow it: once the host makes the Space signed-in only, the
    same anonymous request is refused within the access cache's 2 s."""
    host = served.session("Hal")
    space = served.live_space(host, "Open")
    url = f"{served.url}/hls/{space}/opus.m3u8"

    def listed() -> str:
        r = httpx.get(url, timeout=10)
        return r.text if r.status_code == 200 else ""

    text = until(listed, 60, "live segments")
    segment = f"{served.url}/hls/{space}/" + [
        ln for ln in text.splitlines() if ln.endswith(".m4s") and not ln.startswith("#")][-1]
    first = httpx.get(segment, timeout=10)
    assert first.status_code == 200 and first.headers["cache-control"].startswith("public")
    before = fast_answers(served)

    def repeated() -> bool:  # a loaded machine may let the 2 s access entry lapse once
        again = httpx.get(segment, timeout=10)
        assert again.content == first.content
        return fast_answers(served) > before

    until(repeated, 10, "the segment repeated by the fast path")
    with served.client(host) as c:
        c.post(f"/api/v1/spaces/{space}/actions",
               json={"action": "signed_in_only_on"}).raise_for_status()
    until(lambda: httpx.get(segment, timeout=10).status_code == 401, 10,
             "the anonymous listener refused")
    mine = httpx.get(segment, headers={"Authorization": f"Bearer {host}"}, timeout=10)
    assert mine.status_code == 200 and mine.headers["cache-control"].startswith("private")
    with served.client(host) as c:
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
