"""The web app when the api and the edge are different processes (as in a cluster): the
page, served by an api-only process, asks /api/v1/spaces/<id>/listen where to listen and
decodes the program from the edge it names, in Debian's Chromium."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.conftest import start_townhall
from tests.web.chromium import chromium, needs_chromium
from townhall.bus.embedded import free_port
from townhall.procs import stop_process

WAIT_MS = 30_000  # generous: the machine is shared and slow

pytestmark = [pytest.mark.browser,
              needs_chromium]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(fake_media=False) as b:
        yield b


def start_edge(data: Path, nats_url: str) -> tuple[str, subprocess.Popen[bytes]]:
    """An edge-only `townhall serve` announcing its own public URL; waits for /healthz."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "edge.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "townhall", "serve", "--roles", "edge", "--port", str(port),
         "--nats", nats_url, "--data", str(data), "--public-url", url, "--node-id", "edge-x"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_process(proc, 5, signal.SIGKILL)
    raise AssertionError(f"edge not healthy:\n{(data / 'edge.log').read_text()[-2000:]}")


def test_page_from_an_api_only_process_listens_at_the_edge(browser: Browser, tmp_path: Path,
                                                         nats_url: str) -> None:
    data = tmp_path / "data"
    api = start_townhall(data, "--nats", nats_url, "--roles", "api,stage")
    edge_url, edge = start_edge(data, nats_url)
    speaker: subprocess.Popen[bytes] | None = None
    try:
        token = api.session("Host Split")
        with api.client(token) as c:
            space = c.post("/api/v1/spaces", json={"title": "Split roles"}).json()["id"]
            assert c.post(f"/api/v1/spaces/{space}/start").status_code == 200
            # The api process serves no /ws of its own: the page must go to the edge.
            assert c.get(f"/ws/{space}").status_code == 404
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                edges = c.get(f"/api/v1/spaces/{space}/listen").json()["edges"]
                if edges:
                    break
                time.sleep(0.2)
            assert [e["ws"] for e in edges] == [f"{edge_url}/ws/{space}"]
            where = c.get(f"/api/v1/spaces/{space}/listen").json()
            assert (where["ws"], where["ogg"]) == (edges[0]["ws"], edges[0]["ogg"])
        speaker = subprocess.Popen(
            [sys.executable, "-m", "townhall", "speak", "--url", api.url, "--space", space,
             "--token", token, "--tone", "440", "--seconds", "120"],
            stdout=(tmp_path / "speak.log").open("wb"), stderr=subprocess.STDOUT)
        context = browser.new_context(base_url=api.url)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"/s/{space}")  # listening needs no sign-in
        try:
            page.wait_for_function(
                "() => window.townhallPlayer && window.townhallPlayer.framesDecoded > 50"
                " && window.townhallPlayer.level > 0.01", timeout=WAIT_MS * 2)
        except Exception as exc:
            got: Any = page.evaluate("() => ({...(window.townhallPlayer || {})})")
            raise AssertionError(f"player {got}\n{api.tail(30)}") from exc
        got = page.evaluate("() => ({...window.townhallPlayer})")
        assert got["edge"] == f"{edge_url}/ws/{space}" and got["state"] == "live", got
        context.close()
    finally:
        if speaker is not None:
            stop_process(speaker, sig=signal.SIGINT)
        stop_process(edge, 5)
        api.stop(timeout=5)
