"""Recording end to end: a real `townhall serve`, a real `townhall speak --tone`, ffmpeg as
the player. A recorded Space with 440 Hz then 880 Hz; after the end the replay decodes to
those tones for as long as the Space was live; Range, clips, deletion and refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Served, running
from tests.stages import speak
from tests.waiting import until
from townhall.bus import NatsBus
from townhall.recording.recorder import (
    BUCKET,
    clip_name,
    index_name,
    replay_name,
    segment_name,
)

pytestmark = pytest.mark.timeout(300)
RATE = 48_000


def speak_out(served: Served, space: str, token: str, hz: int, seconds: float) -> None:
    """`townhall speak` a tone for ``seconds``, to its successful end."""
    speaker = speak(served, space, token, hz=hz, seconds=seconds)
    try:
        assert speaker.wait(60) == 0
    finally:
        speaker.kill()


def decode(data: bytes, tmp: Path, suffix: str = ".opus") -> np.ndarray:
    path = tmp / f"d{time.monotonic_ns()}{suffix}"
    path.write_bytes(data)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", str(RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * RATE / len(pcm))


def loud_runs(pcm: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges of 100 ms blocks with sound, merged."""
    block = RATE // 10
    rms = [np.sqrt(np.mean(pcm[i:i + block] ** 2)) for i in range(0, len(pcm) - block, block)]
    runs: list[tuple[int, int]] = []
    for i, level in enumerate(rms):
        if level > 1000:
            if runs and runs[-1][1] == i * block:
                runs[-1] = (runs[-1][0], (i + 1) * block)
            else:
                runs.append((i * block, (i + 1) * block))
    return runs


def problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(f"/{slug}"), r.json()


@pytest.fixture(scope="module")
def served(townhall_shared: Served) -> Served:
    s = townhall_shared
    # The stage runs as a child: let it report before timing a Space against its program.
    until(lambda: "townhall_stage_report_age_seconds{" in httpx.get(
        f"{s.url}/metrics", timeout=5).text, 30, "the stage reports")
    return s


@pytest.fixture(scope="module")
def recorded(served: Served) -> dict[str, Any]:
    """A recorded Space: 440 Hz, then 880 Hz, then the end; its finished snapshot."""
    host, _ = served.guest("Ada")
    with served.client(host) as c:
        snap = c.post("/api/v1/spaces", json={"title": "Tones", "record": True}).json()
        assert snap["recording"] is True
        space = snap["id"]
        live = c.post(f"/api/v1/spaces/{space}/start").json()
        assert live["recording"] is True
    speak_out(served, space, host, 440, 4)
    speak_out(served, space, host, 880, 4)
    with served.client(host) as c:
        ended = c.post(f"/api/v1/spaces/{space}/end").json()

    def ready() -> dict[str, Any] | None:
        got = httpx.get(f"{served.url}/api/v1/spaces/{space}", timeout=5).json()
        return got if isinstance(got.get("recording"), dict) else None

    done = until(ready, 60, "the recording is ready")
    return {"space": space, "host": host, "snap": done,
            "live_s": float(ended["ended_at"]) - float(ended["started_at"])}


def test_replay_has_both_tones_for_the_live_time(served: Served, recorded: dict[str, Any],
                                                 tmp_path: Path) -> None:
    space = recorded["space"]
    rec = recorded["snap"]["recording"]
    assert rec["url"] == f"/replay/{space}.opus" and rec["state"] == "ready"
    r = httpx.get(f"{served.url}{rec['url']}", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("audio/ogg")
    assert "immutable" in r.headers["cache-control"]
    assert len(r.content) == rec["bytes"]
    pcm = decode(r.content, tmp_path)
    assert abs(len(pcm) / RATE - recorded["live_s"]) < 1.0, (len(pcm) / RATE, recorded)
    assert abs(rec["duration"] - len(pcm) / RATE) < 0.05
    runs = [run for run in loud_runs(pcm) if run[1] - run[0] >= RATE]
    assert len(runs) >= 2, runs
    first, last = runs[0], runs[-1]
    assert abs(peak_hz(pcm[first[0]:first[1]]) - 440) < 15
    assert abs(peak_hz(pcm[last[0]:last[1]]) - 880) < 15
    assert first[1] <= last[0]
    # The same audio as Opus in MP4, index first, for players that want it.
    m4a = httpx.get(f"{served.url}{rec['m4a']}", timeout=30)
    assert m4a.status_code == 200 and m4a.headers["content-type"] == "audio/mp4"
    assert m4a.content[4:8] == b"ftyp" and m4a.content.index(b"moov") < m4a.content.index(
        b"mdat")
    path = tmp_path / "r.m4a"
    path.write_bytes(m4a.content)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                           check=True).stdout
    assert probe.strip() == "opus"
    assert np.array_equal(decode(m4a.content, tmp_path, ".m4a"), pcm)


def test_timeline_says_when_the_host_spoke(served: Served, recorded: dict[str, Any]) -> None:
    space, snap = recorded["space"], recorded["snap"]
    got = httpx.get(f"{served.url}/replay/{space}/timeline.json", timeout=10).json()
    host = snap["host"]["id"]
    spans = [s for s in got["speakers"] if s["id"] == host]
    assert spans, got
    assert all(0 <= s["from"] < s["to"] <= got["duration"] + 0.5 for s in spans)
    # Two tones with a reconnect between them: about 8 s of speaking in all.
    spoken = sum(s["to"] - s["from"] for s in spans)
    assert 5 < spoken < 10, spans


def test_range_answers_206_with_exactly_those_bytes(served: Served,
                                                    recorded: dict[str, Any]) -> None:
    url = f"{served.url}/replay/{recorded['space']}.opus"
    whole = httpx.get(url, timeout=30)
    part = httpx.get(url, headers={"Range": "bytes=100-1099"}, timeout=30)
    assert part.status_code == 206
    assert part.content == whole.content[100:1100]
    assert part.headers["content-length"] == "1000"
    assert part.headers["accept-ranges"] == "bytes"
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
    assert part.headers["etag"] == whole.headers["etag"]
    again = httpx.get(url, headers={"If-None-Match": whole.headers["etag"]}, timeout=30)
    assert again.status_code == 304


def test_clip_of_five_seconds_is_the_right_tone(served: Served, recorded: dict[str, Any],
                                                tmp_path: Path) -> None:
    space, host = recorded["space"], recorded["host"]
    pcm = decode(httpx.get(f"{served.url}/replay/{space}.opus", timeout=30).content, tmp_path)
    first = loud_runs(pcm)[0]
    # 3 s of the 440 Hz part, then 2 s more (into the silence or the 880 Hz part).
    start = first[0] / RATE + 0.5
    with served.client(host) as c:
        made = c.post(f"/api/v1/spaces/{space}/clips", json={"start": start, "duration": 5})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["url"] == f"/clips/{body['id']}.opus"
    assert body["m4a"] == f"/clips/{body['id']}.m4a" and body["page"] == f"/c/{body['id']}"
    clip = decode(httpx.get(f"{served.url}{body['url']}", timeout=30).content, tmp_path)
    assert abs(len(clip) - 5 * RATE) <= 960
    assert abs(peak_hz(clip[:RATE * 2]) - 440) < 15
    # The same audio as the replay at that place (both decoded from the same packets).
    at = round(start * RATE)
    ref = pcm[at + RATE:at + 2 * RATE]
    corr = np.corrcoef(ref, clip[RATE:2 * RATE])[0, 1]
    assert corr > 0.9, corr
    # The same clip as Opus in MP4, index first, with Range.
    url = f"{served.url}{body['m4a']}"
    m4a = httpx.get(url, timeout=30)
    assert m4a.status_code == 200 and m4a.headers["content-type"] == "audio/mp4"
    assert m4a.content.index(b"moov") < m4a.content.index(b"mdat")
    part = httpx.get(url, headers={"Range": "bytes=10-109"}, timeout=30)
    assert part.status_code == 206 and part.content == m4a.content[10:110]
    same = decode(m4a.content, tmp_path, ".m4a")
    assert abs(len(same) - 5 * RATE) <= 960
    assert np.array_equal(same[:len(clip)], clip[:len(same)])


def test_who_may_clip_and_what(served: Served, recorded: dict[str, Any]) -> None:
    space, host = recorded["space"], recorded["host"]
    listener, _ = served.guest("Bo")
    with served.client(listener) as c:
        problem(c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 5}),
                403, "not-on-stage")
    with served.client(host) as c:
        problem(c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 61}),
                422, "invalid-body")
        problem(c.post(f"/api/v1/spaces/{space}/clips",
                       json={"start": 3600, "duration": 5}), 422, "clip-outside")
    problem(httpx.post(f"{served.url}/api/v1/spaces/{space}/clips",
                       json={"start": 0, "duration": 5}, timeout=10), 401, "token-missing")


def test_unrecorded_space_has_no_replay(served: Served) -> None:
    host, _ = served.guest("Cy")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Off the record"}).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        snap = c.post(f"/api/v1/spaces/{space}/end").json()
    assert snap["recording"] is False
    problem(httpx.get(f"{served.url}/replay/{space}.opus", timeout=10), 404, "no-recording")
    problem(httpx.get(f"{served.url}/replay/nosuchspac.opus", timeout=10), 404,
            "space-not-found")


def test_record_toggle_is_the_hosts(served: Served) -> None:
    host, _ = served.guest("Di")
    other, _ = served.guest("Ed")
    with served.client(host) as c:
        space = c.post("/api/v1/spaces", json={"title": "Toggle"}).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        on = c.post(f"/api/v1/spaces/{space}/actions", json={"action": "record_on"})
        assert on.status_code == 200 and on.json()["recording"] is True
        off = c.post(f"/api/v1/spaces/{space}/actions", json={"action": "record_off"})
        assert off.json()["recording"] is False
    with served.client(other) as c:
        problem(c.post(f"/api/v1/spaces/{space}/actions", json={"action": "record_on"}),
                403, "not-host")
    with served.client(host) as c:
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()


def test_townhall_replay_downloads_to_wav(served: Served, recorded: dict[str, Any],
                                          tmp_path: Path) -> None:
    out = tmp_path / "r.wav"
    done = subprocess.run([sys.executable, "-m", "townhall", "replay", "--url", served.url,
                           "--space", recorded["space"], "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, RATE)
        seconds = w.getnframes() / RATE
    assert abs(seconds - recorded["snap"]["recording"]["duration"]) < 0.1
    missing = subprocess.run([sys.executable, "-m", "townhall", "replay", "--url", served.url,
                              "--space", "nosuchspac", "--out", str(tmp_path / "x.wav")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_deleted_recording_is_gone(served: Served, recorded: dict[str, Any]) -> None:
    # Last in this module: the shared recording is deleted here.
    space, host = recorded["space"], recorded["host"]
    with served.client(host) as c:
        clip = c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 1}).json()
    listener, _ = served.guest("Fa")
    with served.client(listener) as c:
        problem(c.delete(f"/api/v1/spaces/{space}/recording"), 403, "not-host")
    with served.client(host) as c:
        gone = c.delete(f"/api/v1/spaces/{space}/recording")
        assert gone.status_code == 200 and gone.json()["recording"] is False
        problem(c.delete(f"/api/v1/spaces/{space}/recording"), 404, "no-recording")
    problem(httpx.get(f"{served.url}/replay/{space}.opus", timeout=10), 404, "no-recording")
    problem(httpx.get(f"{served.url}{clip['url']}", timeout=10), 404, "no-clip")
    problem(httpx.get(f"{served.url}{clip['m4a']}", timeout=10), 404, "no-clip")
    snap = httpx.get(f"{served.url}/api/v1/spaces/{space}", timeout=10).json()
    assert snap["recording"] is False


def test_expired_recording_is_swept_and_answers_410(tmp_path: Path) -> None:
    # Kept ~0.9 s: it is ready only after the end's 2 s settling, so already expired; the
    # sweep (every 0.5 s at this retention) deletes its files and marks it expired.
    with running(tmp_path / "data", "--recording-days", "0.00001") as s:
        host, _ = s.guest("Gu")
        space = s.live_space(host, "Brief", record=True)
        speak_out(s, space, host, 440, 1)  # returns once a stage has taken a second of tone
        with s.client(host) as c:
            clip = c.post(f"/api/v1/spaces/{space}/clips", json={"start": 0, "duration": 0.5})
            assert clip.status_code == 201, clip.text
            clip = clip.json()
            c.post(f"/api/v1/spaces/{space}/end").raise_for_status()

        def swept() -> bool:
            rec = httpx.get(f"{s.url}/api/v1/spaces/{space}", timeout=5).json()["recording"]
            return isinstance(rec, dict) and rec["state"] == "expired"

        until(swept, 60, "the sweep marked the recording expired")
        problem(httpx.get(f"{s.url}/replay/{space}.opus", timeout=10), 410,
                "recording-expired")
        problem(httpx.get(f"{s.url}/replay/{space}/timeline.json", timeout=10), 410,
                "recording-expired")
        problem(httpx.get(f"{s.url}{clip['url']}", timeout=10), 410, "recording-expired")
        assert httpx.get(f"{s.url}/c/{clip['id']}", timeout=10).status_code == 404
        assert asyncio.run(stored(s, space, clip["id"])) == []


async def stored(s: Served, space: str, clip: str) -> list[str]:
    """Which of a recording's objects the object store still holds."""
    from tests.stages import stage_child

    _, nats = stage_child(s.proc.pid)
    bus = await NatsBus.connect([nats], setup=False, auth=s.nats_auth())
    try:
        names = [index_name(space), segment_name(space, 0), replay_name(space),
                 replay_name(space, "m4a"), clip_name(space, clip),
                 clip_name(space, clip, "m4a")]
        return [n for n in names if await bus.obj_get(BUCKET, n) is not None]
    finally:
        await bus.close()


def ffmpeg_pcm(url: str, *extra: str, seconds: float | None = None) -> np.ndarray:
    """What ffmpeg decodes from ``url`` (a live playlist never ends: cap it at ``seconds``)."""
    cap = ["-t", str(seconds)] if seconds else []
    raw = subprocess.run(["ffmpeg", "-v", "error", *extra, "-i", url, *cap, "-f", "s16le",
                          "-ac", "1", "-ar", str(RATE), "-"], capture_output=True, check=True,
                         timeout=60).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64)


def listed(text: str) -> list[str]:
    """The whole segments a media playlist lists, in order."""
    return [ln for ln in text.splitlines() if ln.endswith(".m4s") and not ln.startswith("#")]


def test_ffmpeg_plays_hls_live_and_after_the_end(served: Served) -> None:
    host, _ = served.guest("Hal")
    space = served.live_space(host, "HLS", record=True)
    speaker = speak(served, space, host, hz=880, seconds=60)
    base = f"{served.url}/hls/{space}"
    playlist = f"{base}/opus.m3u8"
    try:
        def tone_listed() -> str | None:
            r = httpx.get(playlist, timeout=10)
            if r.status_code != 200:
                return None
            # Wait until the newest segment is well into the tone.
            pcm = ffmpeg_pcm(playlist, "-live_start_index", "-1", seconds=1)
            return r.text if len(pcm) and np.sqrt(np.mean(pcm ** 2)) > 3000 else None

        live = until(tone_listed, 60, "a live playlist with the tone")
        assert "#EXT-X-ENDLIST" not in live
        master = httpx.get(f"{base}/master.m3u8", timeout=10)
        assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert 'CODECS="opus"' in master.text and 'CODECS="mp4a.40.2"' in master.text
        r = httpx.get(playlist, timeout=10)
        assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert r.headers["cache-control"] == "public, max-age=1"
        assert "CAN-BLOCK-RELOAD=YES" in r.text
        newest = listed(r.text)[-1]
        seg = httpx.get(f"{base}/{newest}", timeout=10)
        assert seg.status_code == 200 and "immutable" in seg.headers["cache-control"]
        pcm = ffmpeg_pcm(playlist, "-live_start_index", "-2", seconds=4)
        assert len(pcm) >= 3 * RATE  # two listed segments, then one more as it came
        assert abs(peak_hz(pcm[-RATE:]) - 880) < 15
        # The AAC rendition (encoded once, by whichever api took the Space's key).
        aac = ffmpeg_pcm(f"{base}/aac.m3u8", "-live_start_index", "-2", seconds=3)
        assert len(aac) >= 2 * RATE
        assert abs(peak_hz(aac[-RATE:]) - 880) < 15
        blocking_reload(base)
        # A clip of a live Space: its last seconds, from JetStream and the recording. The
        # playlist is read again: the one above may have listed only the first segment.
        latest = listed(httpx.get(playlist, timeout=10).text)[-1]
        edge_s = (int(latest.split(".")[0]) + 1) * 2
        assert edge_s >= 4, latest  # ffmpeg has just read 4 s of it
        with served.client(host) as c:
            made = c.post(f"/api/v1/spaces/{space}/clips",
                          json={"start": edge_s - 3, "duration": 2})
        assert made.status_code == 201, made.text
        clip = ffmpeg_pcm(f"{served.url}{made.json()['url']}")
        assert abs(len(clip) - 2 * RATE) <= 960
        assert abs(peak_hz(clip) - 880) < 15
    finally:
        speaker.terminate()
        speaker.wait(10)
    with served.client(host) as c:
        c.post(f"/api/v1/spaces/{space}/end").raise_for_status()

    def ready() -> dict[str, Any] | None:
        got = httpx.get(f"{served.url}/api/v1/spaces/{space}", timeout=5).json()["recording"]
        return got if isinstance(got, dict) else None

    rec = until(ready, 60, "the recording is ready")
    vod = httpx.get(playlist, timeout=10)
    assert vod.text.endswith("#EXT-X-ENDLIST\n")
    # The very live segment is still served, byte for byte, from the recording.
    again = httpx.get(f"{base}/{newest}", timeout=10)
    assert again.status_code == 200 and again.content == seg.content
    pcm = ffmpeg_pcm(playlist)
    assert abs(len(pcm) / RATE - rec["duration"]) < 0.5, (len(pcm) / RATE, rec)
    # The contract's URL is the same VOD: index.m3u8 ends with #EXT-X-ENDLIST too.
    index = httpx.get(f"{base}/index.m3u8", timeout=10)
    assert index.status_code == 200 and index.text == httpx.get(playlist, timeout=10).text
    assert index.text.endswith("#EXT-X-ENDLIST\n")
    assert abs(peak_hz(pcm[len(pcm) // 2:len(pcm) // 2 + RATE]) - 880) < 15
    # The AAC VOD is made once the recording is: then the master lists it.
    until(lambda: "mp4a.40.2" in httpx.get(f"{base}/master.m3u8", timeout=10).text, 60,
             "the AAC rendition of the recording")
    aac_vod = httpx.get(f"{base}/aac.m3u8", timeout=10)
    assert aac_vod.text.endswith("#EXT-X-ENDLIST\n")
    aac = ffmpeg_pcm(f"{base}/aac.m3u8")
    assert abs(len(aac) / RATE - rec["duration"]) < 0.5, (len(aac) / RATE, rec)
    assert abs(peak_hz(aac[len(aac) // 2:len(aac) // 2 + RATE]) - 880) < 15


def blocking_reload(base: str) -> None:
    """LL-HLS: a request for the next part returns once it exists, listing it; nonsense
    and requests too far ahead answer 400 at once."""
    text = httpx.get(f"{base}/opus.m3u8", timeout=10).text
    hint = text.split('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="')[1].split('"')[0]
    msn, part = hint.removesuffix(".m4s").split(".")
    assert hint not in text.split("#EXT-X-PRELOAD-HINT")[0]  # not there yet
    got = httpx.get(f"{base}/opus.m3u8", params={"_HLS_msn": msn, "_HLS_part": part},
                    timeout=15)
    assert got.status_code == 200, got.text
    assert f'URI="{hint}"' in got.text.split("#EXT-X-PRELOAD-HINT")[0] \
        or f"{msn}.m4s" in listed(got.text)
    part_bytes = httpx.get(f"{base}/{hint}", timeout=10)
    assert part_bytes.status_code == 200 and part_bytes.content[4:8] == b"styp"
    whole = httpx.get(f"{base}/opus.m3u8", params={"_HLS_msn": int(msn) + 1}, timeout=15)
    assert whole.status_code == 200 and f"{int(msn) + 1}.m4s" in listed(whole.text)
    for params in ({"_HLS_msn": int(msn) + 50}, {"_HLS_part": "1"},
                   {"_HLS_msn": "x"}, {"_HLS_msn": msn, "_HLS_part": "9"}):
        problem(httpx.get(f"{base}/opus.m3u8", params=params, timeout=10), 400,
                "bad-hls-directive")
