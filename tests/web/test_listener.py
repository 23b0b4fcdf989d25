"""The listening page in Debian's Chromium: WebSocket chunks decoded by WebCodecs, the
speaking indicator from levels frames, resuming after a stalled network with a
"reconnecting" banner, and the "Space is full" countdown on admission refusal. The speaker
is `townhall speak` (a real WHIP client), not a browser."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Served, start_townhall
from tests.stages import speak
from tests.waiting import until
from tests.web.chromium import chromium, needs_chromium
from townhall.procs import stop_process

WAIT_MS = 25_000  # generous: the machine is shared and slow
# `townhall serve` whose stage has owned a Space does not exit on SIGTERM within 20 s yet;
# waiting that out would double this module's runtime, so stop() kills after this.
STOP_S = 5

pytestmark = [pytest.mark.browser,
              needs_chromium]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def open_as(browser: Browser, served: Served, path: str) -> Page:
    """A fresh browser context on ``path``, not signed in (listening needs no sign-in)."""
    context = browser.new_context(base_url=served.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(path)
    return page


def live_space(served: Served, title: str) -> tuple[str, str]:
    """A live Space created over the api; returns (space id, host token)."""
    token = served.session("Host Tone")
    return served.live_space(token, title), token


def stats(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("() => ({...(window.townhallPlayer || {})})")
    return result


def test_listener_decodes_speaking_and_resumes_after_a_stall(browser: Browser, tmp_path: Path,
                                                        artifacts: Path,
                                                        townhall_shared: Served) -> None:
    served = townhall_shared
    speaker: subprocess.Popen[bytes] | None = None
    page: Page | None = None
    try:
        space, token = live_space(served, "Tone hour")
        speaker = speak(served, space, token, tmp_path / "speak.log", seconds=120)
        page = open_as(browser, served, f"/s/{space}")
        expect(page.get_by_role("heading", name="Tone hour")).to_be_visible()
        try:
            page.wait_for_function(
                "() => window.townhallPlayer && window.townhallPlayer.framesDecoded > 50"
                " && window.townhallPlayer.level > 0.01", timeout=WAIT_MS * 2)
            # The host's tone drives the levels frames, which light the host's avatar.
            expect(page.locator("li.person.speaking")).to_have_count(1, timeout=WAIT_MS)
        except AssertionError as exc:
            raise AssertionError(f"player {stats(page)}\nspeak: "
                                 f"{(tmp_path / 'speak.log').read_text()[-1500:]}\n"
                                 f"{served.tail(30)}") from exc
        s = stats(page)
        assert s["mode"] == "webcodecs" and s["state"] == "live", s
        # Every chunk after the first arrived in order: no sequence gaps on a quiet machine
        # would be timing-dependent, so only bound them.
        assert s["gaps"] < s["chunks"], s
        page.screenshot(path=str(artifacts / "web-listener-phone.png"))

        # The network goes away without a close: the page notices the stall, says so, and
        # once back resumes from the next chunk it needs (the edge replays up to 60 s).
        before = stats(page)
        page.context.set_offline(True)
        expect(page.locator("#banner")).to_contain_text("Reconnecting", timeout=WAIT_MS)
        page.context.set_offline(False)
        page.wait_for_function(
            f"() => window.townhallPlayer.state === 'live'"
            f" && window.townhallPlayer.connects > {before['connects']}"
            f" && window.townhallPlayer.chunks > {before['chunks'] + 20}", timeout=WAIT_MS)
        expect(page.locator("#banner")).to_be_hidden()
        after = stats(page)
        assert after["gaps"] == before["gaps"], (before, after)
    finally:
        if page is not None:
            page.context.close()  # open sockets would hold up the server's graceful stop
        if speaker is not None:
            stop_process(speaker, sig=signal.SIGINT)


def test_full_edge_shows_a_countdown_and_keeps_retrying(browser: Browser, tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data", env={"TOWNHALL_EDGE_CAPACITY": "0"})
    page: Page | None = None
    try:
        space, _ = live_space(served, "Packed hall")
        # Signed in by a token handed over in the link's fragment, not the form.
        context = browser.new_context(base_url=served.url)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"/s/{space}#token={served.session('Late Comer')}")
        page.get_by_role("button", name="Continue as Late Comer").click()
        expect(page.locator("#who")).to_have_text("Late Comer")
        assert "token" not in page.url
        banner = page.get_by_role("status").filter(has_text="This Space is full")
        expect(banner).to_contain_text("retrying in", timeout=WAIT_MS)
        # It keeps trying after each countdown, and the page stays on the Space.
        first = stats(page)["connects"]
        until(lambda: stats(page)["connects"] > first, 20, "a new try after the countdown",
              every_s=0.2)
        expect(page.get_by_role("heading", name="Packed hall")).to_be_visible()
        assert stats(page)["state"] == "full"
    finally:
        if page is not None:
            page.context.close()
        served.stop(timeout=STOP_S)
