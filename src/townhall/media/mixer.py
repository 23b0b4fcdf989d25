"""The mixer, with no I/O: one program mix and a mix-minus per speaker, per 20 ms frame.

Each speaker's return feed is the sum of everyone *else*, computed as total minus their
own contribution before limiting, so their own voice is absent by construction: no echo.
Muted speakers contribute nothing (host-mute and self-mute alike). A soft limiter keeps
loud moments from hard-clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES
from townhall.media.levels import FULL_SCALE, level

__all__ = ["FULL_SCALE", "Mix", "level", "limit", "mix"]


def limit(x: np.ndarray, threshold: float = 0.7 * FULL_SCALE) -> np.ndarray:
    """Soft limiter: linear below ``threshold``, a tanh knee above, never past full scale."""
    out = x.astype(np.float64, copy=True)
    over = np.abs(out) > threshold
    if np.any(over):
        headroom = FULL_SCALE - threshold
        excess = np.abs(out[over]) - threshold
        out[over] = np.sign(out[over]) * (threshold + headroom * np.tanh(excess / headroom))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


@dataclass
class Mix:
    """One frame's result: what listeners hear and what each speaker hears back."""

    program: np.ndarray
    returns: dict[str, np.ndarray]


def mix(frames: dict[str, np.ndarray | None], muted: set[str]) -> Mix:
    """Mix one frame from each speaker (None = nothing this frame)."""
    live = {k: v.astype(np.float64) for k, v in frames.items()
            if v is not None and k not in muted}
    total = np.zeros(FRAME_SAMPLES, dtype=np.float64)
    for pcm in live.values():
        total += pcm
    returns = {}
    for speaker in frames:
        own = live.get(speaker)
        returns[speaker] = limit(total - own if own is not None else total)
    return Mix(program=limit(total), returns=returns)
