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
