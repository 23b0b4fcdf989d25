"""`townhall speak`: a WHIP client that streams a tone or a WAV file onto a Space's stage,
records its mix-minus return feed, and reconnects on its own when the stage changes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import random
import signal
import sys
import time
import wave
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.stage.ingest import to_mono


class SourceTrack(MediaStreamTrack):
    """Real-time 20 ms frames of a tone or a looping WAV (48 kHz mono int16)."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__()
        self.pcm = pcm
        self._pos = 0
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        idx = (np.arange(FRAME_SAMPLES) + self._pos) % self.pcm.size
        self._pos = (self._pos + FRAME_SAMPLES) % self.pcm.size
        frame = av.AudioFrame.from_ndarray(self.pcm[idx].reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def read_wav(path: Path) -> np.ndarray:
    """A WAV as 48 kHz mono int16 (resampled by PyAV when it is not)."""
    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for res in resampler.resample(frame):
                out.append(res.to_ndarray().reshape(-1))
    if not out:
        raise ValueError(f"{path} has no audio")
    return np.concatenate(out).astype(np.int16)


class ReturnRecorder:
    """Collects the return feed's samples."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.last_at = time.monotonic()

    async def consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame: Any = await track.recv()
                self.chunks.append(to_mono(frame))
                self.last_at = time.monotonic()

    def save(self, path: Path) -> None:
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())


RETURN_SILENCE_S = 3.0   # the stage sends its return feed every 20 ms, silence included
CONNECT_GRACE_S = 7.0    # ICE and DTLS before the first return frame


async def watch_return(recorder: ReturnRecorder, dropped: asyncio.Event) -> None:
    """ICE consent takes ~30 s to notice a dead stage; a silent return feed shows it in 3."""
    while not dropped.is_set():
        await asyncio.sleep(0.5)
        if time.monotonic() - recorder.last_at > RETURN_SILENCE_S:
            dropped.set()


async def publish_once(url: str, space: str, token: str, pcm: np.ndarray,
                       recorder: ReturnRecorder, stop: asyncio.Event) -> str:
    """One WHIP session until it drops or we stop; returns why it ended."""
    pc = RTCPeerConnection()
    source = SourceTrack(pcm)
    pc.addTransceiver(source, direction="sendrecv")
    dropped = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        readers.append(asyncio.ensure_future(recorder.consume(track)))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed", "disconnected"):
            dropped.set()

    location = ""
    auth = {"Authorization": f"Bearer {token}"}
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            r = await http.post(f"/whip/{space}", content=pc.localDescription.sdp,
                                headers={**auth, "Content-Type": "application/sdp"})
            if r.status_code != 201:
                return f"refused {r.status_code}: {r.text}"
            location = r.headers["location"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            print(f"speak: live on {space} ({location})", file=sys.stderr, flush=True)
            recorder.last_at = time.monotonic() + CONNECT_GRACE_S
            watchdog = asyncio.ensure_future(watch_return(recorder, dropped))
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(dropped.wait()),
                       watchdog]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(location, headers=auth)
                return "stopped"
            return "connection dropped"
    except httpx.HTTPError as exc:
        return f"unreachable: {exc}"
    finally:
        for task in readers:
            task.cancel()
        source.stop()
        with contextlib.suppress(Exception):
            await pc.close()


async def speak(args: argparse.Namespace) -> int:
    pcm = tone(args.tone) if args.tone else read_wav(Path(args.file))
    recorder = ReturnRecorder()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)
    attempt = 0
    try:
        while not stop.is_set():
            why = await publish_once(args.url, args.space, args.token, pcm, recorder, stop)
            if why == "stopped":
                break
            if why.startswith(("refused 401", "refused 403", "refused 404")):
                print(f"speak: {why}", file=sys.stderr)
                return 1
            attempt += 1
            delay = random.uniform(0, min(5.0, 0.25 * 2 ** attempt))  # full jitter
            print(f"speak: {why}; reconnecting in {delay:.1f}s", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    finally:
        if args.return_out:
            recorder.save(Path(args.return_out))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("speak", help="stream a tone or a WAV onto a Space's stage over WHIP")
    p.add_argument("--url", required=True, help="townhall base URL (api role)")
    p.add_argument("--space", required=True)
    p.add_argument("--token", required=True, help="token of someone on the stage")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tone", type=float, help="sine tone in Hz")
    src.add_argument("--file", help="WAV (or any audio file) to loop")
    p.add_argument("--seconds", type=float, default=0, help="stop after S seconds")
    p.add_argument("--return-out", default="", help="save the return feed to this WAV")
    p.set_defaults(func=lambda a: asyncio.run(speak(a)))
