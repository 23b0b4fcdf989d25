"""The viral link in Debian's Chromium: a fresh browser opens a shared `/s/<id>`, sees what it
is at once, listens with one click and no sign-in (open and closed mode), and then costs the
control plane nothing; sign-in is asked for only to react; a link token waits for the
person's yes; the page fits a phone; the embed plays inside another site's iframe while the
Space page refuses to be framed; /docs loads nothing from elsewhere.

The speaker is `townhall speak --tone` (a real WHIP client)."""

from __future__ import annotations

import http.server
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import Served, running
from tests.stages import speak
from tests.waiting import until
from tests.web.chromium import chromium, needs_chromium
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus.embedded import free_port
from townhall.procs import stop_process

WAIT_MS = 25_000   # generous: the machine is shared and slow
LISTEN_S = 30      # how long a listening page is watched for control-plane requests
TITLE = "Open mic night"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [pytest.mark.browser, needs_chromium]


@dataclass
class Hall:
    """A served townhall with one live public Space and a tone on its stage."""

    served: Served
    space: str
    token: str
    speaker: subprocess.Popen[bytes]

    def snapshot(self) -> dict[str, Any]:
        r = httpx.get(f"{self.served.url}/api/v1/spaces/{self.space}", timeout=10)
        r.raise_for_status()
        snap: dict[str, Any] = r.json()
        return snap


def hall_on(served: Served, where: Path, *, closed: bool = False) -> Hall:
    """A live Space titled TITLE on ``served`` with a tone on its stage."""
    if closed:  # no guest sessions: the operator's app mints tokens
        token = TokenIssuer(load_or_create_secret(served.data)).mint(
            "host-tone", "Host Tone", role="host")
    else:
        token = served.session("Host Tone")
    space = served.live_space(token, TITLE)
    return Hall(served, space, token, speak(served, space, token, where / "speak.log",
                                            seconds=400))


@contextmanager
def closed_hall(where: Path) -> Iterator[Hall]:
    """A hall on a server of its own in closed mode."""
    with running(where / "data", "--closed") as served:
        hall = hall_on(served, where, closed=True)
        try:
            yield hall
        finally:
            stop_process(hall.speaker, sig=signal.SIGINT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def hall(townhall_shared: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    h = hall_on(townhall_shared, tmp_path_factory.mktemp("hall"))
    yield h
    stop_process(h.speaker, sig=signal.SIGINT)


@pytest.fixture
def context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    made: list[BrowserContext] = []

    def make(served: Served, **kw: Any) -> BrowserContext:
        ctx = browser.new_context(base_url=served.url, **kw)  # fresh: no stored token
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()  # open sockets would hold up the server's stop


def player(page: Page) -> dict[str, Any]:
    got: dict[str, Any] = page.evaluate("() => ({...(window.townhallPlayer || {})})")
    return got


def api_calls(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(m, u) for m, u in requests if urlsplit(u).path.startswith("/api/")]


@dataclass
class Listening:
    """A fresh browser listening to a share link, and every request its page made."""

    hall: Hall
    page: Page
    requests: list[tuple[str, str]]
    seen: int = 0
    frames: int = 0

    def watch(self) -> None:
        """Start an observation window: nothing may happen in it but audio."""
        self.seen, self.frames = len(self.requests), player(self.page)["framesDecoded"]

    def assert_quiet(self) -> None:
        assert api_calls(self.requests[self.seen:]) == [], \
            "a listening page polled the control plane"
        assert player(self.page)["framesDecoded"] > self.frames + 500, \
            "the decoder stopped being fed"


def listen_anonymously(make: Callable[..., BrowserContext], hall: Hall) -> Listening:
    """Open the share link in a fresh browser and press Listen: it plays, signed in as
    nobody, counted once, having asked the api for at most the edge list."""
    page = make(hall.served).new_page()
    page.set_default_timeout(WAIT_MS)
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    before = hall.snapshot()["listeners"]
    page.goto(f"/s/{hall.space}")
    expect(page.get_by_role("heading", name=TITLE)).to_be_visible(timeout=2000)
    expect(page.get_by_text("Hosted by Host Tone")).to_be_visible(timeout=2000)
    page.get_by_role("button", name="🎧 Listen").click()
    try:
        page.wait_for_function(
            "() => window.townhallPlayer && window.townhallPlayer.state === 'live'"
            " && window.townhallPlayer.framesDecoded > 50 && window.townhallPlayer.level > 0.01",
            timeout=WAIT_MS * 2)
    except Exception as exc:
        raise AssertionError(f"player {player(page)}\n{hall.served.tail(30)}") from exc
    assert page.evaluate("() => localStorage.getItem('townhall.token')") is None
    until(lambda: hall.snapshot()["listeners"] == before + 1, 20,
          "the edge counts the page as one more listener")
    assert not [u for m, u in requests if m == "POST" and u.endswith("/api/v1/sessions")]
    # Loading cost at most one api request: the edge list (the snapshot is in the page).
    loaded = api_calls(requests)
    assert len(loaded) <= 1 and all(u.endswith(f"/spaces/{hall.space}/listen")
                                    for _, u in loaded), loaded
    return Listening(hall, page, requests)


def test_share_link_plays_without_sign_in_in_open_and_closed_mode(
        context: Callable[..., BrowserContext], hall: Hall, tmp_path: Path) -> None:
    with closed_hall(tmp_path) as closed:
        both = [listen_anonymously(context, hall), listen_anonymously(context, closed)]
        # One observation window for both modes (the pages listen side by side), not a
        # wait for a condition: nothing but audio may happen in it.
        for listening in both:
            listening.watch()
        both[0].page.wait_for_timeout(LISTEN_S * 1000)
        for listening in both:
            listening.assert_quiet()
        both[0].page.context.close()
        # Closed mode: an action that needs an identity explains where sign-in comes from.
        page = both[1].page
        page.get_by_role("button", name="React 🔥").click()
        dialog = page.get_by_role("dialog", name="Sign in")
        expect(dialog).to_contain_text("the app that sent you here")
        expect(dialog.get_by_label("Display name")).to_have_count(0)
        dialog.get_by_role("button", name="OK").click()
        expect(dialog).to_have_count(0)
        page.context.close()


def test_reacting_asks_for_sign_in_then_counts(context: Callable[..., BrowserContext],
                                               hall: Hall) -> None:
    page = context(hall.served).new_page()
    page.set_default_timeout(WAIT_MS)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.goto(f"/s/{hall.space}")
    before = hall.snapshot()["reactions"].get("🔥", 0)
    page.get_by_role("button", name="React 🔥").click()
    dialog = page.get_by_role("dialog", name="Sign in")
    expect(dialog.get_by_label("Display name")).to_be_visible()
    assert posted == [], "nothing is sent before the person signs in"
    dialog.get_by_label("Display name").fill("Rae Reactor")
    dialog.get_by_role("button", name="Sign in").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("#who")).to_have_text("Rae Reactor")
    # The reaction the sign-in interrupted is carried out and counted.
    until(lambda: hall.snapshot()["reactions"].get("🔥", 0) == before + 1, 20,
          "the reaction is counted")
    expect(page.locator("#totals")).to_contain_text(f"🔥 {before + 1}")


def test_link_token_waits_for_confirmation(context: Callable[..., BrowserContext],
                                           hall: Hall) -> None:
    token = hall.served.session("Lena Link")
    page = context(hall.served).new_page()
    page.set_default_timeout(WAIT_MS)
    stored = "() => localStorage.getItem('townhall.token')"
    page.goto(f"/s/{hall.space}#token={token}")
    expect(page.get_by_role("button", name="Continue as Lena Link")).to_be_visible()
    assert "token" not in page.url and page.evaluate(stored) is None
    page.get_by_role("button", name="No").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert page.evaluate(stored) is None
    expect(page.locator("#who")).to_have_text("")
    page.goto(f"/s/{hall.space}?token={token}")
    page.get_by_role("button", name="Continue as Lena Link").click()
    expect(page.locator("#who")).to_have_text("Lena Link")
    assert page.evaluate(stored) == token and "token" not in page.url


def assert_fits_and_nothing_overlaps(page: Page, width: int) -> None:
    boxes: list[dict[str, Any]] = page.evaluate("""() => [...document.querySelectorAll(
        'a, button, input, textarea, summary, select')].filter((el) => el.offsetParent !== null
        && getComputedStyle(el).visibility !== 'hidden').map((el) => {
          const r = el.getBoundingClientRect();
          return { what: el.outerHTML.slice(0, 60), x: r.left + scrollX, y: r.top + scrollY,
                   w: r.width, h: r.height };
        })""")
    assert len(boxes) >= 5, boxes
    for b in boxes:
        assert b["w"] > 0 and b["h"] > 0 and b["x"] >= 0 and b["x"] + b["w"] <= width + 0.5, b
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            assert dx <= 0.5 or dy <= 0.5, f"overlap: {a} and {b}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width


def test_phone_width_every_control_reachable(context: Callable[..., BrowserContext],
                                             hall: Hall) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ctx = context(hall.served, viewport={"width": 390, "height": 844}, is_mobile=True,
                  has_touch=True)
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"/s/{hall.space}")
    expect(page.get_by_role("button", name="🎧 Listen")).to_be_visible()
    page.get_by_text("Share", exact=True).click()
    expect(page.get_by_label("Embed this Space on your site")).to_be_visible()
    assert f"/embed/{hall.space}" in page.get_by_label("Embed this Space on your site") \
        .input_value()
    assert_fits_and_nothing_overlaps(page, 390)
    page.screenshot(path=str(SCREENSHOTS / "share-phone.png"), full_page=True)
    # The host's own view has the most controls.
    page.goto(f"/s/{hall.space}#token={hall.token}")
    page.get_by_role("button", name="Continue as Host Tone").click()
    expect(page.get_by_role("button", name="End Space")).to_be_visible()
    assert_fits_and_nothing_overlaps(page, 390)
    page.screenshot(path=str(SCREENSHOTS / "host-phone.png"), full_page=True)


class _Parent(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


def test_embed_plays_in_another_sites_iframe_and_the_space_page_refuses(
        context: Callable[..., BrowserContext], hall: Hall) -> None:
    url = hall.served.url
    _Parent.body = f"""<!doctype html><title>A blog</title>
<iframe id="embed" src="{url}/embed/{hall.space}" allow="autoplay" width="420"
 height="260"></iframe>
<iframe id="share" src="{url}/s/{hall.space}" width="420" height="260"></iframe>
<script>window.got = [];
addEventListener("message", (e) => {{ if (e.origin === "{url}") got.push(e.data); }});</script>
""".encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Parent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = context(hall.served).new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")  # another origin (port)
        embed = page.frame_locator("#embed")
        expect(embed.get_by_role("heading", name=TITLE)).to_be_visible()
        page.wait_for_function("() => got.some((m) => m.type === 'state' && m.state === 'live'"
                               " && m.playing === false)")
        # The page around it starts playback through the documented postMessage API.
        page.evaluate("() => document.getElementById('embed').contentWindow"
                      ".postMessage({type: 'play'}, '*')")
        frame = next(f for f in page.frames if "/embed/" in f.url)
        frame.wait_for_function("() => window.townhallPlayer.framesDecoded > 50"
                                " && window.townhallPlayer.level > 0.01", timeout=WAIT_MS * 2)
        page.wait_for_function("() => got.some((m) => m.playing === true)")
        page.evaluate("() => document.getElementById('embed').contentWindow"
                      ".postMessage({type: 'pause'}, '*')")
        page.wait_for_function("() => got.length && got[got.length - 1].playing === false")
        expect(embed.get_by_role("button", name="🎧 Listen")).to_be_visible()
        # By now the other frame has long finished: refused by frame-ancestors, no app in it.
        expect(page.frame_locator("#share").locator("#main")).to_have_count(0)
        page.screenshot(path=str(SCREENSHOTS / "embed.png"))
    finally:
        server.shutdown()
        server.server_close()


def test_docs_load_nothing_from_another_origin(context: Callable[..., BrowserContext],
                                               hall: Hall) -> None:
    page = context(hall.served).new_page()
    page.set_default_timeout(WAIT_MS)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/docs")
    expect(page.get_by_role("heading", name="/api/v1/spaces/{space}/reactions")).to_be_visible()
    assert requests and all(u.startswith(hall.served.url + "/") for u in requests), requests
