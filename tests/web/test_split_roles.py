"""The web app when the api and the edge are different processes (as in a cluster): the
page, served by an api-only process, asks /api/v1/spaces/<id>/listen where to listen and
decodes the program from the edge it names, in Debian's Chromium."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.conftest import fresh_port, spawn_townhall
from tests.stages import speak
from tests.waiting import until
from tests.web.chromium import chromium, needs_chromium
from townhall.procs import stop_process

WAIT_MS = 30_000  # generous: the machine is shared and slow

pytestmark = [pytest.mark.browser,
              needs_chromium]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(fake_media=False) as b:
        yield b


def test_page_from_an_api_only_process_listens_at_the_edge(browser: Browser, tmp_path: Path,
                                                         nats_url: str) -> None:
    data = tmp_path / "data"
    port = fresh_port()
    edge_url = f"http://127.0.0.1:{port}"
    # Both boot side by side: an edge-only process announcing its own public URL.
    api = spawn_townhall(data, "--nats", nats_url, "--roles", "api,stage")
    edge = spawn_townhall(data, "--roles", "edge", "--nats", nats_url, "--public-url",
                          edge_url, "--node-id", "edge-x", port=port)
    speaker: subprocess.Popen[bytes] | None = None
    try:
        api.wait_healthy()
        edge.wait_healthy()
        token = api.session("Host Split")
        with api.client(token) as c:
            space = api.live_space(token, "Split roles")
            # The api process serves no /ws of its own: the page must go to the edge.
            assert c.get(f"/ws/{space}").status_code == 404
            edges = until(lambda: c.get(f"/api/v1/spaces/{space}/listen").json()["edges"], 15,
                          "the edge announced to the api")
            assert [e["ws"] for e in edges] == [f"{edge_url}/ws/{space}"]
            where = c.get(f"/api/v1/spaces/{space}/listen").json()
            assert (where["ws"], where["ogg"]) == (edges[0]["ws"], edges[0]["ogg"])
        speaker = speak(api, space, token, tmp_path / "speak.log", seconds=120)
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
        edge.stop(timeout=5)
        api.stop(timeout=5)
