"""A host live from Debian's Chromium keeps speaking when the stage owning the Space dies:
the page notices its return feed went quiet, publishes again at the same /whip URL, and
the stage that took the Space over has it as a speaker. Nobody clicks anything."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import start_townhall
from tests.waiting import until
from tests.web.chromium import chromium, needs_chromium, tone_wav
from townhall.procs import stop_process

WAIT_MS = 30_000  # generous: the machine is shared and slow

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240),
              needs_chromium]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(mic=tone_wav(tmp_path_factory.mktemp("mic") / "tone.wav")) as b:
        yield b


def stage(data: Path, nats_url: str, node: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "townhall", "serve", "--roles", "stage", "--nats", nats_url,
         "--data", str(data), "--node-id", node],
        stdout=(data / f"{node}.log").open("ab"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)


def stage_gauge(url: str, name: str) -> dict[str, float]:
    """The api's export of each stage's heartbeat: {node: value}."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {m[1]: float(m[2]) for m in
            re.finditer(rf'^{name}\{{node="([^"]+)"\}} (\S+)$', text, re.MULTILINE)}


def test_the_page_goes_live_again_on_the_stage_that_takes_over(
        browser: Browser, tmp_path: Path, nats_url: str) -> None:
    data = tmp_path / "data"
    served = start_townhall(data, "--nats", nats_url, "--roles", "api,edge")
    stages = {node: stage(data, nats_url, node) for node in ("stage-a", "stage-b")}
    context = browser.new_context(base_url=served.url, permissions=["microphone"])
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto("/")
        page.get_by_label("Display name").fill("Hedy Host")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Title").fill("Stage failover")
        page.get_by_role("button", name="Start now").click()
        page.wait_for_url("**/s/*")
        page.get_by_role("button", name="🎙️ Go live").click()
        expect(page.locator("#on-air")).to_be_visible()
        until(lambda: 1.0 in stage_gauge(served.url, "townhall_stage_speakers").values(), 30,
              "a stage reports the page as its speaker")
        owner = next(n for n, v in stage_gauge(served.url, "townhall_stage_speakers").items()
                     if v == 1.0)
        spare = next(n for n in stages if n != owner)
        stages[owner].send_signal(signal.SIGKILL)
        until(lambda: stage_gauge(served.url, "townhall_stage_speakers").get(spare) == 1.0,
              60, f"{spare} takes the Space over and the page publishes to it")
        got = page.evaluate("() => ({...window.townhallPublisher})")
        assert got["publishes"] >= 2 and got["drops"] >= 1, got
        expect(page.locator("#on-air")).to_be_visible()
    finally:
        context.close()
        for proc in stages.values():
            stop_process(proc, 5)
        served.stop(timeout=5)
