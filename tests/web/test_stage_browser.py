"""A real browser as speaker: headless Chromium publishes its (file-backed) fake
microphone over WHIP; the tone of that WAV is found in the program on NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.conftest import Served
from tests.integration.test_stage_program import guest
from tests.stages import stage_child, tone_db
from tests.waiting import until_async
from tests.web.chromium import CHROMIUM, needs_chromium, tone_wav
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Message
from townhall.media.chunk import Chunk

pytestmark = [pytest.mark.timeout(180),
              needs_chromium]

PUBLISH_JS = """
async ([space, token]) => {
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 5000);
  });
  const r = await fetch(`/whip/${space}`, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": `Bearer ${token}`}});
  if (r.status !== 201) return `refused ${r.status}: ${await r.text()}`;
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  window.pc = pc;
  return r.headers.get("Location");
}
"""


async def test_chromium_speaker_reaches_the_program(tmp_path: Path, townhall: Served) -> None:
    served = townhall
    wav = tone_wav(tmp_path / "mic.wav", 1000, seconds=5)
    _, nats = stage_child(served.proc.pid)
    host, _ = guest(served, "Ada")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Browser"}).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
    chunks: list[Chunk] = []

    async def on_media(msg: Message) -> None:
        chunks.append(Chunk.decode(msg.data))

    bus = await NatsBus.connect([nats], setup=False, auth=served.nats_auth())
    try:
        await bus.subscribe(subjects.media(space), on_media)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={wav}",
                    "--disable-features=WebRtcHideLocalIpsWithMdns"])
            page = await browser.new_page()
            await page.goto(f"{served.url}/healthz")
            await until_async(lambda: chunks, 30, "the stage process is up and owns the Space")
            location = await page.evaluate(PUBLISH_JS, [space, host])
            assert str(location).startswith(f"/whip/{space}/"), location
            heard = -1.0
            for _ in range(300):
                await asyncio.sleep(0.1)
                if len(chunks) > 10 and (heard := tone_db(chunks[-10:], 1000)) > 30:
                    break
            await browser.close()
        assert heard > 30, f"1 kHz only {heard:.1f} dB above the floor\n{served.tail()}"
    finally:
        await bus.close()
