"""An ended, recorded Space's page in Debian's Chromium is its replay: the audio plays (the
scrubber's time moves) through a signed link (the Space admits signed-in listeners only, so
``<audio src>`` needs one), a speed applies, the timeline lists who spoke when, a reaction
peak jumps the replay there, and the clip button gives a share link whose page carries Open
Graph tags and plays the clip; and Chromium plays the recording's HLS playlist."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import running
from tests.stages import speak
from tests.waiting import until
from tests.web.chromium import chromium, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.timeout(240)]
WAIT_MS = 25_000
AUDIO = "document.getElementById('replay-audio')"


def test_replay_page_plays_changes_speed_lists_speakers_peaks_and_clips(
        tmp_path: Path) -> None:
    with running(tmp_path / "data") as served:
        until(lambda: "townhall_stage_report_age_seconds{" in httpx.get(
            f"{served.url}/metrics", timeout=5).text, 30, "the stage reports")
        host, identity = served.guest("Ada")
        space = served.live_space(host, "Replay me", record=True, signed_in_only=True)
        speaker = speak(served, space, host, seconds=6)
        try:
            with served.client(host) as c:
                # The program is on air (its live playlist lists a segment): applaud.
                until(lambda: c.get(f"/hls/{space}/opus.m3u8").status_code == 200, 60,
                         "the Space is on air")
                for _ in range(12):
                    assert c.post(f"/api/v1/spaces/{space}/reactions",
                                  json={"emoji": "🔥"}).status_code == 202
            assert speaker.wait(60) == 0
        finally:
            speaker.kill()
        with served.client(host) as c:
            c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
            until(lambda: isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"],
                                        dict), 60, "the recording is ready")
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{served.url}/healthz")
            page.evaluate("([t, i]) => { localStorage.setItem('townhall.token', t); "
                          "localStorage.setItem('townhall.identity', i); "
                          "localStorage.setItem('townhall.name', 'Ada'); }",
                          [host, identity])
            page.goto(f"{served.url}/s/{space}")
            expect(page.locator("#replay")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#timeline li")).not_to_have_count(0, timeout=WAIT_MS)
            # A signed link, not a token, in the audio's URL.
            src = until(lambda: page.evaluate(f"{AUDIO}.src"), 10, "the replay's src")
            assert re.search(rf"/replay/{space}\.opus\?t=\d+\.\d+\.", src), src
            page.evaluate(f"{AUDIO}.play()")
            # (wait_for_function evaluates a string: the page's CSP forbids that; poll.)
            until(lambda: page.evaluate(f"{AUDIO}.currentTime") > 0.5, 25,
                     "the replay plays: the scrubber's time moves")
            page.locator("#replay button[data-rate='2']").click()
            assert page.evaluate(f"{AUDIO}.playbackRate") == 2
            expect(page.locator("#replay button[data-rate='2']")).to_have_attribute(
                "aria-pressed", "true")
            duration = page.evaluate(f"{AUDIO}.duration")
            rec = httpx.get(f"{served.url}/api/v1/spaces/{space}", timeout=5).json()
            assert abs(duration - rec["recording"]["duration"]) < 0.5

            # The applause is a peak; following it moves the replay to just before it.
            peak = page.locator("#peaks button").first
            expect(peak).to_contain_text("🔥", timeout=WAIT_MS)
            at = float(peak.get_attribute("data-at") or "nan")
            assert 0 <= at < duration
            page.evaluate(f"{AUDIO}.pause()")
            peak.click()
            assert abs(page.evaluate(f"{AUDIO}.currentTime") - max(0.0, at - 5)) < 0.5

            # The clip button: the 30 s before here (the whole 4 s so far), then its page.
            page.evaluate(f"{AUDIO}.currentTime = 4")
            page.locator("#clip-last").click()
            link = page.locator("#clip-link")
            expect(link).to_be_visible(timeout=WAIT_MS)
            href = link.get_attribute("href") or ""
            assert re.fullmatch(rf"/c/{space}-[0-9a-f]+", href), href
            html = httpx.get(f"{served.url}{href}", timeout=10).text
            og = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">',
                                 html))
            assert og["og:title"] == "A clip from Replay me", og
            link.click()
            clip = "document.getElementById('clip-audio')"
            expect(page.locator("#clip-audio")).to_be_attached(timeout=WAIT_MS)
            until(lambda: "?t=" in page.evaluate(f"{clip}.src"), 10, "the clip's link")
            page.evaluate(f"{clip}.play()")
            until(lambda: page.evaluate(f"{clip}.currentTime") > 0.3, 25,
                     "the clip plays on its own page")
            assert abs(page.evaluate(f"{clip}.duration") - 4.0) < 0.1

            # The browser plays the HLS URL too: Chromium's own HLS support (no hls.js),
            # the VOD playlist through a signed link, as a CDN-fed player would.
            with served.client(host) as c:
                ticket = c.post(f"/api/v1/spaces/{space}/recording/ticket")
                assert ticket.status_code == 200, ticket.text
            hls = ticket.json()["hls_opus"]
            assert re.fullmatch(rf"/hls/{space}/index\.m3u8\?t=\S+", hls), hls
            page.goto(f"{served.url}/healthz")
            page.evaluate("(u) => { const a = document.createElement('audio'); "
                          "a.id = 'hls'; a.src = u; document.body.appendChild(a); "
                          "a.play(); }", hls)
            player = "document.getElementById('hls')"
            until(lambda: page.evaluate(f"{player}.currentTime") > 1.0, 25,
                  "Chromium plays the HLS playlist")
            assert page.evaluate(f"{player}.error") is None
            assert abs(page.evaluate(f"{player}.duration") - duration) < 1.0
