"""Debian's Chromium for the browser tests (never a downloaded browser), launched one way,
and the one page script that offers a microphone over WebRTC (and publishes it over WHIP)."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser as AsyncBrowser
from playwright.async_api import async_playwright
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's /usr/bin/chromium")

# A page function: [iceServers] -> the offer SDP, ICE gathered (WHIP takes no trickle; 5 s
# at most), for the microphone's track; the connection stays in window.pc for the answer.
OFFER_JS = """
async ([iceServers]) => {
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});  // secure context only
  const pc = new RTCPeerConnection({iceServers});
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 5000);
  });
  window.pc = pc;
  return pc.localDescription.sdp;
}
"""

# A page function: [space, token, askIce] -> the WHIP resource's Location once the page
# publishes its microphone to the Space (or "refused <status>: <body>"); with askIce, the
# ICE servers come from /api/v1/ice as the web app takes them.
PUBLISH_JS = f"""
async ([space, token, askIce]) => {{
  const auth = {{"Authorization": `Bearer ${{token}}`}};
  const iceServers = askIce
    ? (await (await fetch("/api/v1/ice", {{headers: auth}})).json()).iceServers : [];
  const sdp = await ({OFFER_JS.strip()})([iceServers]);
  const r = await fetch(`/whip/${{space}}`, {{method: "POST", body: sdp,
    headers: {{...auth, "Content-Type": "application/sdp"}}}});
  if (r.status !== 201) return `refused ${{r.status}}: ${{await r.text()}}`;
  await window.pc.setRemoteDescription({{type: "answer", sdp: await r.text()}});
  return r.headers.get("Location");
}}
"""


def tone_wav(path: Path, freq: float = 440.0, seconds: float = 3.0) -> Path:
    """A 48 kHz mono 16-bit sine for Chromium's fake microphone (it loops the file)."""
    t = np.arange(int(48_000 * seconds)) / 48_000
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm.tobytes())
    return path


def _args(fake_media: bool, mic: Path | None, extra: tuple[str, ...]) -> list[str]:
    args = ["--headless", "--no-sandbox", "--disable-gpu"]
    if fake_media:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}")
    return [*args, "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", *extra]


@contextmanager
def chromium(*, fake_media: bool = True, mic: Path | None = None) -> Iterator[Browser]:
    """Headless Chromium; ``fake_media`` grants a fake microphone (fed from ``mic``, a WAV,
    when given) without asking."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=_args(fake_media, mic, ()))
        try:
            yield browser
        finally:
            browser.close()


@asynccontextmanager
async def async_chromium(*, mic: Path | None = None,
                         extra: tuple[str, ...] = ()) -> AsyncIterator[AsyncBrowser]:
    """``chromium`` with a fake microphone, for tests on an event loop. Its ICE candidates
    carry real addresses (not mDNS names): a WebRTC peer in a test process cannot resolve
    mDNS."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=_args(True, mic, ("--disable-features=WebRtcHideLocalIpsWithMdns", *extra)))
        try:
            yield browser
        finally:
            await browser.close()
