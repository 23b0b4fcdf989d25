"""A real producer for tests: a sine tone encoded with PyAV's libopus into Chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import av
import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk


class ToneChunks:
    """Yields consecutive chunks of ``per_chunk`` 20 ms Opus packets of a ``freq`` Hz tone."""

    def __init__(self, freq: float = 440.0, per_chunk: int = 5, first_seq: int = 1) -> None:
        self.freq = freq
        self.per_chunk = per_chunk
        self.seq = first_seq
        self._sample = 0
        self._pts = 0
        self._enc = av.CodecContext.create("libopus", "w")
        self._enc.sample_rate = SAMPLE_RATE
        self._enc.layout = "mono"
        self._enc.format = "s16"
        self._enc.bit_rate = 32_000
        self._enc.open()
        self._queued: list[bytes] = []

    def _packet(self) -> bytes:
        while not self._queued:
            t = (np.arange(FRAME_SAMPLES) + self._sample) / SAMPLE_RATE
            pcm = (np.sin(2 * np.pi * self.freq * t) * 12_000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self._sample
            self._sample += FRAME_SAMPLES
            for pkt in self._enc.encode(frame):
                self._queued.append(bytes(pkt))
        return self._queued.pop(0)

    def next(self) -> Chunk:
        """The next chunk, stamped with the wall clock now."""
        packets = tuple(self._packet() for _ in range(self.per_chunk))
        chunk = Chunk(seq=self.seq, pts=self._pts, sent_us=int(time.time() * 1e6),
                      packets=packets)
        self.seq += 1
        self._pts += FRAME_SAMPLES * self.per_chunk
        return chunk

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            yield self.next()


def band_db(pcm: np.ndarray, hz: float) -> float:
    """Level of the ``hz`` band (±15 Hz) of 48 kHz ``pcm``, in dB of the FFT magnitude."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    band = (freqs > hz - 15) & (freqs < hz + 15)
    return float(20 * np.log10(spectrum[band].max() + 1e-9))


def has_tone(pcm: np.ndarray, hz: float, over_db: float = 30.0) -> bool:
    """Whether ``hz`` stands ``over_db`` above the 1.5 kHz band (where no test tone is)."""
    return pcm.size > 0 and band_db(pcm, hz) > band_db(pcm, 1500) + over_db


async def hear_tone(url: str, space: str, hz: float, within_s: float) -> bool:
    """Whether a listener of ``space`` at ``url`` hears a ``hz`` tone held for a second of
    the program within ``within_s`` seconds (checked twice a second)."""
    import asyncio

    from townhall.client.listener import ResilientListener
    from townhall.media.opus import OpusDecoder

    heard: list[Chunk] = []
    listener = ResilientListener(url, space, on_chunk=heard.append)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    decoder = OpusDecoder()
    pcm: list[np.ndarray] = []
    done = 0
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            new, done = heard[done:], len(heard)
            pcm += [decoder.decode(p) for c in new for p in c.packets]
            # Sustained: in the last 250 ms and in the 250 ms a second before them.
            if len(pcm) >= 50 and has_tone(np.concatenate(pcm[-12:]), hz) \
                    and has_tone(np.concatenate(pcm[-50:-38]), hz):
                return True
        return False
    finally:
        stop.set()
        task.cancel()
