"""One speaker's WebRTC session (aiortc): their audio into a FrameBuffer, and their
mix-minus return feed out as a track of its own."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import uuid
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.jitterbuffer import FrameBuffer

log = logging.getLogger(__name__)


class ReturnTrack(MediaStreamTrack):
    """The mix-minus for one speaker, paced by the stage's mixer clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=25)
        self._pts = 0

    def feed(self, pcm: np.ndarray) -> None:
        if self._queue.full():  # the sender fell behind: drop the oldest, stay current
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._queue.get()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def to_mono(frame: av.AudioFrame) -> np.ndarray:
    """aiortc hands over 48 kHz s16 (usually stereo, interleaved): fold to mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if data.dtype != np.int16:
        data = np.clip(data * 32767.0, -32768, 32767).astype(np.int16)
    if frame.format.is_planar:
        mono = data.astype(np.int32).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return mono.astype(np.int16)


class SpeakerSession:
    """A speaker's peer connection on this stage."""

    def __init__(self, identity: str, name: str) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.identity = identity
        self.name = name
        self.buffer = FrameBuffer()
        self.returns = ReturnTrack()
        self.pc = RTCPeerConnection()
        self.packets_in = 0
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._reader is None:
                self._reader = asyncio.ensure_future(self._read(track))

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, offer_sdp: str) -> str:
        """Accept the WHIP offer; returns the SDP answer (ICE gathered, no trickle)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.sender.replaceTrack(self.returns)
                transceiver.direction = "sendrecv"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return str(self.pc.localDescription.sdp)

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                pcm = to_mono(frame)
                self.packets_in += 1
                # Frames may be 10/20/40/60 ms: split into 20 ms mixer frames.
                for start in range(0, pcm.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
                    self.buffer.push(pcm[start:start + FRAME_SAMPLES])
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("speaker track failed", extra={"identity": self.identity})

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self._reader is not None:
            self._reader.cancel()
        self.returns.stop()
        # aiortc's close can hang on a peer that vanished; never let it hold up a stop.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 2)
