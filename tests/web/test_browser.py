"""The web app in a real browser: Debian's Chromium, a fake microphone, a real townhall serve.

One story across ordered tests sharing one server and one browser: a host goes live, a
second person requests to speak and goes live, a third listens and decodes audio, reactions,
mute, removal and ending reach every page. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import Served
from tests.web.chromium import chromium, needs_chromium, tone_wav

WAIT_MS = 20_000  # generous: the machine is shared and slow

expect.set_options(timeout=WAIT_MS)
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(mic=tone_wav(tmp_path_factory.mktemp("mic") / "tone.wav")) as b:
        yield b


class Story:
    """Pages and ids shared by the ordered tests of this module."""

    def __init__(self) -> None:
        self.contexts: list[BrowserContext] = []
        self.host: Page | None = None
        self.bob: Page | None = None
        self.cy: Page | None = None
        self.space = ""


@pytest.fixture(scope="module")
def story(browser: Browser, townhall_shared: Served) -> Iterator[Story]:
    # Depends on the server so its pages close first: open sockets would stall its stop.
    s = Story()
    yield s
    for c in s.contexts:
        c.close()


def new_page(browser: Browser, story: Story, base: str) -> Page:
    ctx = browser.new_context(base_url=base, viewport={"width": 1000, "height": 800},
                              permissions=["microphone"])
    story.contexts.append(ctx)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


def sign_in(page: Page, path: str, name: str) -> None:
    page.goto(path)
    page.get_by_label("Display name").fill(name)
    page.get_by_role("button", name="Sign in").click()


def sign_in_when_asked(page: Page, name: str) -> None:
    """The Space page asks for a name only when an action needs one."""
    dialog = page.get_by_role("dialog", name="Sign in")
    dialog.get_by_label("Display name").fill(name)
    dialog.get_by_role("button", name="Sign in").click()


def player(page: Page) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate("() => ({...(window.townhallPlayer || {})})")
    return stats


def test_host_goes_live(browser: Browser, story: Story, townhall_shared: Served,
                        artifacts: Path) -> None:
    host = story.host = new_page(browser, story, townhall_shared.url)
    sign_in(host, "/", "Ada Lovelace")
    expect(host.get_by_role("heading", name="Spaces")).to_be_visible()
    host.get_by_label("Title").fill("Browser town hall")
    host.screenshot(path=str(artifacts / "web-home.png"))
    host.get_by_role("button", name="Start now").click()
    host.wait_for_url("**/s/*")
    story.space = host.url.rstrip("/").rsplit("/", 1)[1]
    expect(host.locator("#state")).to_have_text("LIVE")
    expect(host.get_by_role("listitem", name="Ada Lovelace, host")).to_be_visible()
    host.get_by_role("button", name="🎙️ Go live").click()
    expect(host.locator("#on-air")).to_be_visible()
    # The host sees each speaker's uplink as the stage grades it (here: their own, loopback).
    expect(host.get_by_role("listitem", name="Ada Lovelace, host").locator(".pill.link")
           ).to_have_text("link good", timeout=20_000)
    snap = townhall_shared.client().get(f"/api/v1/spaces/{story.space}").json()
    assert snap["state"] == "live" and snap["host"]["name"] == "Ada Lovelace"


def test_share_link_request_approve_go_live(browser: Browser, story: Story,
                                            townhall_shared: Served) -> None:
    assert story.host is not None, "host story step failed"
    bob = story.bob = new_page(browser, story, townhall_shared.url)
    bob.goto(f"/s/{story.space}")
    expect(bob.get_by_role("heading", name="Browser town hall")).to_be_visible()
    bob.get_by_role("button", name="✋ Request to speak").click()
    sign_in_when_asked(bob, "Bob Byte")
    expect(bob.get_by_role("button", name="Withdraw request")).to_be_visible()
    story.host.get_by_role("button", name="Approve Bob Byte").click()
    expect(bob.get_by_role("listitem", name="Bob Byte, speaker")).to_be_visible()
    expect(story.host.get_by_role("listitem", name="Bob Byte, speaker")).to_be_visible()
    bob.get_by_role("button", name="🎙️ Go live").click()
    expect(bob.locator("#on-air")).to_be_visible()
    # The stage reports the fake microphones as speaking; the pages light up.
    try:
        expect(story.host.locator("li.person.speaking").first).to_be_visible()
    except AssertionError as e:
        raise AssertionError(f"no speaking indicator; host player {player(story.host)}\n"
                             f"{townhall_shared.tail(30)}") from e


def test_listener_decodes_audio(browser: Browser, story: Story, townhall_shared: Served,
                                artifacts: Path) -> None:
    assert story.host is not None and story.bob is not None, "earlier story steps failed"
    cy = story.cy = new_page(browser, story, townhall_shared.url)
    cy.goto(f"/s/{story.space}")  # listening needs no sign-in
    cy.get_by_role("button", name="🎧 Listen").click()
    try:
        cy.wait_for_function("() => window.townhallPlayer"
                             " && window.townhallPlayer.framesDecoded > 50"
                             " && window.townhallPlayer.peak > 0.01", timeout=WAIT_MS)
    except Exception as e:
        raise AssertionError(f"listener decoded too little: {player(cy)}") from e
    stats = player(cy)
    assert stats["mode"] == "webcodecs" and stats["state"] == "live", stats
    expect(story.host.locator("#listeners")).not_to_have_text("0 listening")
    story.host.screenshot(path=str(artifacts / "web-space-host.png"))
    cy.screenshot(path=str(artifacts / "web-space-listener.png"))


def test_reactions_mute_remove_end_everywhere(story: Story) -> None:
    host, bob, cy = story.host, story.bob, story.cy
    assert host is not None and bob is not None and cy is not None, "earlier story steps failed"
    cy.get_by_role("button", name="React 🔥").click()
    sign_in_when_asked(cy, "Cy Listener")
    expect(host.locator("#totals")).to_contain_text("🔥 1")
    host.get_by_role("button", name="Mute Bob Byte").click()
    for page in (host, bob, cy):
        expect(page.get_by_role("listitem", name="Bob Byte, speaker, muted")).to_be_visible()
    host.once("dialog", lambda d: d.accept())
    host.get_by_role("button", name="Remove and block Bob Byte").click()
    for page in (host, cy):
        expect(page.get_by_role("listitem", name="Bob Byte, speaker, muted")).to_have_count(0)
    expect(bob.locator("#on-air")).to_have_count(0)
    expect(bob.get_by_role("listitem", name="Bob Byte, speaker, muted")).to_have_count(0)
    host.once("dialog", lambda d: d.accept())
    host.get_by_role("button", name="End Space").click()
    for page in (host, bob, cy):
        expect(page.locator("#ended")).to_be_visible()
        expect(page.locator("#state")).to_have_text("ended")


def test_js_chunk_parser_reads_python_chunks(browser: Browser, story: Story,
                                             townhall_shared: Served) -> None:
    """player.js parses exactly what media/chunk.py encodes (the wire contract)."""
    from townhall.media.chunk import Chunk

    chunk = Chunk(seq=2**40 + 7, pts=960 * 12345, sent_us=1_795_585_679_807_123,
                  packets=(b"\x01\x02\x03", b"", bytes(range(200))))
    page = new_page(browser, story, townhall_shared.url)
    page.goto("/")
    got = page.evaluate("""async (bytes) => {
        const { parseChunk } = await import('/static/player.js');
        const c = parseChunk(new Uint8Array(bytes).buffer);
        return { seq: c.seq, pts: c.pts, sentUs: c.sentUs,
                 packets: c.packets.map((p) => Array.from(p)) };
    }""", list(chunk.encode()))
    assert got == {"seq": chunk.seq, "pts": chunk.pts, "sentUs": chunk.sent_us,
                   "packets": [list(p) for p in chunk.packets]}
    bad = page.evaluate("""async () => {
        const { parseChunk } = await import('/static/player.js');
        const junk = new TextEncoder().encode('XXXX' + '0'.repeat(40)).buffer;
        const short = new Uint8Array([0x54, 0x48, 0x43, 0x31, 0, 0]).buffer;
        return [parseChunk(junk), parseChunk(short)];
    }""")
    assert bad == [None, None], "non-chunks and truncated chunks must be refused"
