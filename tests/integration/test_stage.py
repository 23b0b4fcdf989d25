"""The speaker path end to end: `townhall speak` over WHIP, the stage's mix, mix-minus."""

from __future__ import annotations

import asyncio
import subprocess
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import stages
from tests.conftest import Served
from tests.stages import live_space_with
from tests.waiting import until_async
from townhall.client.listener import ResilientListener
from townhall.media.chunk import Chunk
from townhall.media.opus import OpusDecoder
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    return townhall_shared


def band_db(pcm: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / 48_000)
    band = (freqs > hz - 15) & (freqs < hz + 15)
    return float(20 * np.log10(spectrum[band].max() + 1e-9))


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def speak(served: Served, space: str, token: str, hz: int, seconds: float,
          out: Path) -> subprocess.Popen[bytes]:
    """A tone speaker that writes what it hears back (its return feed) to ``out``."""
    return stages.speak(served, space, token, out.with_suffix(".log"), hz=hz, seconds=seconds,
                        extra=("--return-out", str(out)))


async def test_two_speakers_mixed_once_each_hears_only_the_other(served: Served,
                                                                 tmp_path: Path) -> None:
    space, people = live_space_with(served, "Ada", "Bob")
    a = speak(served, space, people[0][0], 440, 12, tmp_path / "ada.wav")
    b = speak(served, space, people[1][0], 660, 12, tmp_path / "bob.wav")
    heard: list[Chunk] = []
    listener = ResilientListener(served.url, space, on_chunk=heard.append)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await until_async(lambda: len(heard) >= 100, 30, "10 s of program")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert a.wait(30) == 0 and b.wait(30) == 0
    assert listener.stats.missing == 0 and len(heard) >= 60
    decoder = OpusDecoder()
    program = np.concatenate([decoder.decode(p) for c in heard for p in c.packets])
    tail = program[-48_000 * 4:]
    floor = band_db(tail, 1500)
    assert band_db(tail, 440) > floor + 30 and band_db(tail, 660) > floor + 30
    for wav, own, other in (("ada.wav", 440, 660), ("bob.wav", 660, 440)):
        feed = read_wav(tmp_path / wav)
        assert feed.size > 48_000 * 6, (wav, (tmp_path / wav).with_suffix(".log").read_text())
        part = feed[48_000 * 3:48_000 * 8]
        assert band_db(part, other) > floor + 30, wav
        assert band_db(part, own) - band_db(part, other) <= -40, wav


def test_whip_refusals_are_precise_and_harmless(served: Served) -> None:
    space, people = live_space_with(served, "Host", "Lis")
    host, listener = people[0][0], people[1][0]
    # Lis went on stage through approve in live_space_with; a new guest is a listener.
    outsider = httpx.post(f"{served.url}/api/v1/sessions", json={"name": "Out"}).json()
    offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" \
            "a=rtpmap:111 opus/48000/2\r\n"
    cases = [
        ({}, offer, 401, "token-missing"),
        ({"Authorization": f"Bearer {host}"}, "garbage", 400, "bad-sdp"),
        ({"Authorization": f"Bearer {host}"}, "v=0\r\n" + "a=x\r\n" * 20_000, 413, "too-large"),
        ({"Authorization": f"Bearer {outsider['token']}"}, offer, 403, "not-on-stage"),
        ({"Authorization": f"Bearer {host}"}, offer.replace("m=audio", "m=video"), 422,
         "no-audio"),
        ({"Authorization": f"Bearer {host}"}, offer.replace("opus", "PCMU"), 422, "no-opus"),
    ]
    for headers, body, status, slug in cases:
        r = httpx.post(f"{served.url}/whip/{space}", content=body, timeout=20,
                       headers={**headers, "Content-Type": "application/sdp"})
        assert r.status_code == status, (slug, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith(slug)
    r = httpx.post(f"{served.url}/whip/zzzzzzzzzz", content=offer, timeout=20,
                   headers={"Authorization": f"Bearer {host}"})
    assert r.status_code == 404
    with served.client(host) as c:
        other = c.post("/api/v1/spaces", json={"title": "Later"}).json()["id"]
        r = c.post(f"/whip/{other}", content=offer)
        assert r.status_code == 409 and r.json()["type"] == "/problems/not-live"
        snap = c.get(f"/api/v1/spaces/{space}").json()
        assert snap["state"] == "live" and len(snap["stage"]) == 2
    assert listener


async def test_removed_speaker_is_cut_off_and_cannot_publish_again(served: Served,
                                                                   tmp_path: Path) -> None:
    space, people = live_space_with(served, "Host", "Gone")
    (host, _), (gone, gone_id) = people
    proc = speak(served, space, gone, 550, 30, tmp_path / "gone.wav")
    heard: list[Chunk] = []
    listener = ResilientListener(served.url, space, on_chunk=heard.append)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    decoder = OpusDecoder()

    def recent_550() -> float:
        pcm = np.concatenate([decoder.decode(p) for c in heard[-10:] for p in c.packets])
        return band_db(pcm, 550) - band_db(pcm, 2000)

    await until_async(lambda: len(heard) > 10 and recent_550() > 30, 20,
                      "the speaker in the program")
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        r = await c.post(f"/api/v1/spaces/{space}/actions",
                         json={"action": "remove", "identity": gone_id, "block": True},
                         headers={"Authorization": f"Bearer {host}"})
        assert r.status_code == 200
        n = len(heard)
        # 2.5 s of program after the removal (chunks are 100 ms), however slow the machine
        await until_async(lambda: len(heard) >= n + 25, 20, "the program after the removal")
        decoder = OpusDecoder()
        after = np.concatenate([decoder.decode(p) for c in heard[n + 10:] for p in c.packets])
        assert after.size and band_db(after, 550) - band_db(after, 2000) < 20
        r = await c.post(f"/whip/{space}", content="v=0\r\nm=audio 9 x 111\r\nopus/48000",
                         headers={"Authorization": f"Bearer {gone}"})
        assert r.status_code == 403
    stop.set()
    await asyncio.wait_for(task, 10)
    stop_process(proc)
