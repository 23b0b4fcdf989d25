"""Opus encode and decode through PyAV (libopus): 48 kHz mono, 20 ms frames."""

from __future__ import annotations

import fractions
from typing import Any, cast

import av
import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE


class OpusEncoder:
    """One encoder per Space: the program is encoded once, whatever the audience."""

    def __init__(self, bitrate: int = 32_000) -> None:
        self._ctx: Any = cast(Any, av.CodecContext.create("libopus", "w"))
        self._ctx.sample_rate = SAMPLE_RATE
        self._ctx.layout = "mono"
        self._ctx.format = "s16"
        self._ctx.bit_rate = bitrate
        self._ctx.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        """One 20 ms frame of int16 samples → one Opus packet."""
        frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


class OpusDecoder:
    """Opus packets back to int16 samples (tests, `townhall listen`, analysis)."""

    def __init__(self) -> None:
        self._ctx: Any = cast(Any, av.CodecContext.create("opus", "r"))
        self._ctx.sample_rate = SAMPLE_RATE
        self._ctx.layout = "mono"

    def decode(self, packet: bytes) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1) for f in self._ctx.decode(av.Packet(packet))]
        if not out:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(out)
        if pcm.dtype != np.int16:
            pcm = np.clip(pcm * 32767.0, -32768, 32767).astype(np.int16)
        return pcm
