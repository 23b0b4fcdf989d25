"""An ended, recorded Space's page in Debian's Chromium is its replay: the audio plays (the
scrubber's time moves), a speed applies, and the timeline lists who spoke when."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import start_townhall
from tests.web.chromium import chromium, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.timeout(240)]
WAIT_MS = 25_000


def wait_for(cond: Callable[[], Any], bound_s: float, what: str) -> Any:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {bound_s}s: {what}")


def test_replay_page_plays_changes_speed_and_lists_speakers(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    try:
        wait_for(lambda: "townhall_stage_report_age_seconds{" in httpx.get(
            f"{served.url}/metrics", timeout=5).text, 30, "the stage reports")
        host = served.session("Ada")
        with served.client(host) as c:
            space = c.post("/api/v1/spaces", json={"title": "Replay me", "record": True}
                           ).json()["id"]
            c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        subprocess.run([sys.executable, "-m", "townhall", "speak", "--url", served.url,
                        "--space", space, "--token", host, "--tone", "440", "--seconds", "4"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=60)
        with served.client(host) as c:
            c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
            wait_for(lambda: isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"],
                                        dict), 60, "the recording is ready")
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{served.url}/s/{space}")
            expect(page.locator("#replay")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#timeline li")).not_to_have_count(0, timeout=WAIT_MS)
            page.evaluate("document.getElementById('replay-audio').play()")
            # (wait_for_function evaluates a string: the page's CSP forbids that; poll.)
            wait_for(lambda: page.evaluate(
                "document.getElementById('replay-audio').currentTime") > 0.5, 25,
                "the replay plays: the scrubber's time moves")
            page.locator("#replay button[data-rate='2']").click()
            assert page.evaluate("document.getElementById('replay-audio').playbackRate") == 2
            expect(page.locator("#replay button[data-rate='2']")).to_have_attribute(
                "aria-pressed", "true")
            duration = page.evaluate("document.getElementById('replay-audio').duration")
            rec = httpx.get(f"{served.url}/api/v1/spaces/{space}", timeout=5).json()
            assert abs(duration - rec["recording"]["duration"]) < 0.5
    finally:
        served.stop()
