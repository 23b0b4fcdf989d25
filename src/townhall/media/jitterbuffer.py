"""A speaker's frame buffer between the network and the mixer clock, with no I/O.

aiortc already reorders RTP packets and runs Opus (with its packet-loss concealment)
before frames reach townhall; what is left is the clock boundary: frames arrive in bursts
and at the sender's pace, the mixer takes exactly one every 20 ms on its own clock. This
buffer holds a small adaptive target depth, conceals an empty slot by fading the last
frame out, drops the oldest frames when a sender floods (so one speaker can neither
stall nor speed up the mix), and counts what it did.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES


@dataclass
class FrameBuffer:
    """Per-speaker queue of 20 ms int16 frames with an adaptive target depth."""

    min_depth: int = 1
    max_depth: int = 10        # 200 ms: beyond this the oldest frames are dropped
    target: int = 2
    frames: deque[np.ndarray] = field(default_factory=deque)
    underruns: int = 0
    overflows: int = 0
    concealed: int = 0
    _last: np.ndarray | None = None
    _primed: bool = False
    _fade: float = 1.0

    def push(self, pcm: np.ndarray) -> None:
        """A decoded frame from the network."""
        if pcm.size != FRAME_SAMPLES:
            pcm = np.resize(pcm, FRAME_SAMPLES)
        self.frames.append(pcm.astype(np.int16))
        while len(self.frames) > self.max_depth:
            self.frames.popleft()
            self.overflows += 1
        if len(self.frames) >= self.target:
            self._primed = True

    def pull(self) -> np.ndarray | None:
        """The frame for this mixer tick; concealment or None when the speaker is quiet."""
        if self._primed and self.frames:
            frame = self.frames.popleft()
            self._last, self._fade = frame, 1.0
            # Shrink the target slowly while the buffer runs deep.
            if len(self.frames) > self.target + 2:
                self.frames.popleft()
                self.overflows += 1
            return frame
        if self._primed:
            # Ran dry: grow the target so the next burst is absorbed, conceal a little.
            self.underruns += 1
            self._primed = False
            self.target = min(self.max_depth // 2, self.target + 1)
        if self._last is not None and self._fade > 0.05:
            self._fade *= 0.5
            self.concealed += 1
            return (self._last * self._fade).astype(np.int16)
        return None
