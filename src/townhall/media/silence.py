"""Whether a Space's program needs mixing this frame, with no I/O: silence nearly free.

Most live Spaces are silent most of the time. While no unmuted speaker's frame is audible
(levels.AUDIBLE_MS: the level meter would show 0, below −60 dBFS RMS), there is nothing to
mix: after a hangover the program is gated to digital silence, fed to the Space's own
encoder until it settles on one packet (libopus repeats the same tiny packet for digital
silence), and from then on that packet is repeated without encoding anything. Listeners'
decoders see exactly the stream the encoder would have made; the chunk clock, sequence
numbers and pts run on untouched. The first audible frame is mixed and encoded in the
same tick: the encoder's history is the silence it was last fed, which is what listeners'
decoders last decoded, so speech starts without a click.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES

HANGOVER_FRAMES = 25  # 500 ms: a pause between words never gates the program
STEADY_PACKETS = 3    # the same silence packet this many times: the encoder has settled

# One 20 ms frame of digital silence, shared (read-only) by every Space and speaker.
SILENT_FRAME = np.zeros(FRAME_SAMPLES, np.int16)
SILENT_FRAME.flags.writeable = False


class Plan(enum.Enum):
    """What a Space's tick does with its program."""

    MIX = "mix"            # mix the speakers, feed the returns, encode the program
    SILENCE = "silence"    # encode digital silence (no mix) until the encoder settles
    REPEAT = "repeat"      # publish the settled silence packet: no mix, no encode


@dataclass
class SilenceGate:
    """Per Space, per tick: mix, encode silence, or repeat the encoder's silence packet.

    MIX while any unmuted speaker's frame was audible in the last ``hangover`` frames.
    After that SILENCE: the encoder gets digital silence, and every packet it returns is
    shown to ``encoded``; once it returned the same packet ``steady`` times in a row, that
    packet is the Space's silence and the plan is REPEAT until the next audible frame,
    which is MIX again at once. A new run starts gated (nobody has spoken yet).
    """

    hangover: int = HANGOVER_FRAMES
    steady: int = STEADY_PACKETS
    quiet: int = HANGOVER_FRAMES   # consecutive frames with nothing audible
    packet: bytes | None = None    # the settled silence packet, while repeating
    mixed: int = 0                 # ticks that mixed and encoded
    encoded_silence: int = 0       # ticks that encoded silence without mixing
    repeated: int = 0              # ticks that only repeated the silence packet
    _last: bytes | None = None
    _same: int = 0

    def plan(self, audible: bool) -> Plan:
        """This tick's plan, given whether any unmuted speaker's frame is audible."""
        if audible:
            self.quiet, self.packet, self._last, self._same = 0, None, None, 0
        elif self.quiet < self.hangover:
            self.quiet += 1
        if self.quiet < self.hangover:
            self.mixed += 1
            return Plan.MIX
        if self.packet is not None:
            self.repeated += 1
            return Plan.REPEAT
        self.encoded_silence += 1
        return Plan.SILENCE

    def encoded(self, packet: bytes) -> None:
        """The packet the encoder made of digital silence on a SILENCE tick."""
        if not packet:  # nothing came out (an encoder still filling up): not settled
            self._same, self._last = 0, None
            return
        self._same = self._same + 1 if packet == self._last else 1
        self._last = packet
        if self._same >= self.steady:
            self.packet = packet
