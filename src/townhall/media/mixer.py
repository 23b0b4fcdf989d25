"""The mixer, with no I/O: one program mix and a mix-minus per speaker, per 20 ms frame.

Each speaker's return feed is the sum of everyone *else*, computed as total minus their
own contribution before limiting, so their own voice is absent by construction: no echo.
Muted speakers contribute nothing (host-mute and self-mute alike). A soft limiter keeps
loud moments from hard-clipping.

Sums are taken in int32 (13 full-scale speakers fit with room to spare) and a frame whose
peak stays below the limiter's knee is passed through as it is, so the common frame costs
a few vector operations and no floating point; one speaker's frame is the program itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES
from townhall.media.levels import FULL_SCALE, level
from townhall.media.silence import SILENT_FRAME

__all__ = ["FULL_SCALE", "Mix", "level", "limit", "mix"]

KNEE = 0.7 * FULL_SCALE


def limit(x: np.ndarray, threshold: float = KNEE) -> np.ndarray:
    """Soft limiter: linear below ``threshold``, a tanh knee above, never past full scale."""
    if x.dtype.kind in "iu" and x.size and max(int(x.max()), -int(x.min())) <= threshold:
        return x if x.dtype == np.int16 else x.astype(np.int16)  # below the knee: as is
    out = x.astype(np.float64, copy=True)
    over = np.abs(out) > threshold
    if np.any(over):
        headroom = FULL_SCALE - threshold
        excess = np.abs(out[over]) - threshold
        out[over] = np.sign(out[over]) * (threshold + headroom * np.tanh(excess / headroom))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


@dataclass
class Mix:
    """One frame's result: what listeners hear and what each speaker hears back.

    The arrays may be shared (a speaker's own frame, the silent frame): read them, never
    write to them."""

    program: np.ndarray
    returns: dict[str, np.ndarray]


def mix(frames: dict[str, np.ndarray | None], muted: set[str]) -> Mix:
    """Mix one frame from each speaker (None = nothing this frame)."""
    live = [(k, v) for k, v in frames.items() if v is not None and k not in muted]
    if not live:
        return Mix(program=SILENT_FRAME, returns=dict.fromkeys(frames, SILENT_FRAME))
    if len(live) == 1:  # one voice: the program is that frame, its speaker hears nobody
        who, pcm = live[0]
        program = limit(pcm)
        returns = dict.fromkeys(frames, program)
        returns[who] = SILENT_FRAME
        return Mix(program=program, returns=returns)
    total = np.zeros(FRAME_SAMPLES, np.int32)
    for _, pcm in live:
        total += pcm
    program = limit(total)
    returns = dict.fromkeys(frames, program)
    for who, pcm in live:
        returns[who] = limit(total - pcm)
    return Mix(program=program, returns=returns)
