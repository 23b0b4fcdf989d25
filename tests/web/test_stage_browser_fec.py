"""Chromium sends Opus in-band FEC to the stage once the stage's receiver reports show
loss, because the WHIP answer asks for it (useinbandfec=1) and the ingest tap keeps the
RTCP statistics aiortc's own handler would have kept. A real headless Chromium and a real
stage SpeakerSession in this process; the link between them loses 10 % (seeded)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import http.server
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import av
import pytest

from tests.waiting import until_async
from tests.web.chromium import OFFER_JS, async_chromium, needs_chromium
from townhall.stage.ingest import SpeakerSession

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.timeout(120)]

class _Blank(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>mic</title>")

    def log_message(self, *_: Any) -> None:
        pass


@contextlib.contextmanager
def loopback_page() -> Iterator[str]:
    """The URL of an empty page on loopback: a secure context, so getUserMedia works."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blank)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def lbrr_checker() -> Any:
    """PyAV's own libopus (1.5+ has opus_packet_has_lbrr; Debian's 1.3 does not)."""
    libs = os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libopus*")
    for path in glob.glob(libs):
        lib = ctypes.CDLL(path)
        if hasattr(lib, "opus_packet_has_lbrr"):
            lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
            return lib.opus_packet_has_lbrr
    pytest.skip("no libopus with opus_packet_has_lbrr to inspect packets")


async def test_chromium_sends_fec_once_it_hears_of_loss() -> None:
    has_lbrr = lbrr_checker()
    session = SpeakerSession("chromium", "Chromium")
    received: list[bytes] = []
    drops = random.Random(7)

    async def lossy_link(packet: Any, arrival_time_ms: int) -> None:
        if drops.random() < 0.10:
            return
        received.append(bytes(packet.payload))
        await session._on_rtp(packet, arrival_time_ms)

    async def mixer_clock() -> None:
        while True:
            session.pull()
            await asyncio.sleep(0.020)

    clock = asyncio.ensure_future(mixer_clock())
    try:
        with loopback_page() as page_url:
            async with async_chromium() as browser:
                page = await browser.new_page()
                await page.goto(page_url)
                offer = await page.evaluate(OFFER_JS, [[]])
                answer = await session.answer(offer)
                assert "useinbandfec=1" in answer
                for t in session.pc.getTransceivers():
                    t.receiver._handle_rtp_packet = lossy_link  # type: ignore[method-assign]
                await page.evaluate("sdp => window.pc.setRemoteDescription({type: 'answer', sdp})",
                                    answer)
                # until Chromium has had receiver reports for a while
                await until_async(lambda: len(received) > 400, 20, "400 packets from Chromium")
    finally:
        clock.cancel()
        await session.close()
    later = received[len(received) // 2:]
    with_fec = sum(has_lbrr(p, len(p)) > 0 for p in later)
    assert len(later) > 150, len(later)
    assert with_fec > len(later) // 10, f"{with_fec} of {len(later)} packets carry FEC"
    assert session.playout.recovered > 0  # and the stage rebuilt lost frames from it
