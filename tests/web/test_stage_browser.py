"""A real browser as speaker: headless Chromium publishes its (file-backed) fake
microphone over WHIP; the tone of that WAV is found in the program on NATS."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Served
from tests.stages import stage_child, tone_db
from tests.waiting import until_async
from tests.web.chromium import PUBLISH_JS, async_chromium, needs_chromium, tone_wav
from townhall.bus import NatsBus, subjects
from townhall.bus.bus import Message
from townhall.media.chunk import Chunk

pytestmark = [pytest.mark.timeout(180),
              needs_chromium]


async def test_chromium_speaker_reaches_the_program(tmp_path: Path,
                                                    townhall_shared: Served) -> None:
    served = townhall_shared
    wav = tone_wav(tmp_path / "mic.wav", 1000, seconds=5)
    _, nats = stage_child(served.proc.pid)
    host = served.session("Ada")
    space = served.live_space(host, "Browser")
    chunks: list[Chunk] = []

    async def on_media(msg: Message) -> None:
        chunks.append(Chunk.decode(msg.data))

    bus = await NatsBus.connect([nats], setup=False, auth=served.nats_auth())
    try:
        await bus.subscribe(subjects.media(space), on_media)
        async with async_chromium(mic=wav) as browser:
            page = await browser.new_page()
            await page.goto(f"{served.url}/healthz")
            await until_async(lambda: chunks, 30, "the stage process is up and owns the Space")
            location = await page.evaluate(PUBLISH_JS, [space, host, False])
            assert str(location).startswith(f"/whip/{space}/"), location
            await until_async(lambda: len(chunks) > 10 and tone_db(chunks[-10:], 1000) > 30,
                              30, f"1 kHz 30 dB above the floor in the program\n{served.tail()}")
    finally:
        await bus.close()
