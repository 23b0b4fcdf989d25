"""Opus encode and decode through PyAV (libopus): 48 kHz mono, 20 ms frames."""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
from typing import Any, cast

import av
import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE

# Samples per frame (48 kHz) by the TOC's configuration number (RFC 6716, 3.1): SILK-only
# 10/20/40/60 ms, hybrid 10/20 ms, CELT-only 2.5/5/10/20 ms.
_CONFIG_SAMPLES = ([480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4)


def frame_samples(toc: int) -> int:
    """Samples (48 kHz) in one frame of a packet with this TOC byte."""
    return _CONFIG_SAMPLES[toc >> 3]


def packet_samples(packet: bytes) -> int:
    """Samples (48 kHz) in a whole packet: its frame length times its frame count (RFC 6716
    §3.2: code 0 one frame, codes 1 and 2 two, code 3 the count in the second byte); 0 for
    a packet no decoder would take (none, or more than 120 ms)."""
    if not packet:
        return 0
    code = packet[0] & 0x3
    frames = 1 if code == 0 else 2 if code < 3 else (packet[1] & 0x3F if len(packet) > 1 else 0)
    samples = frames * frame_samples(packet[0])
    return samples if samples <= 5760 else 0


def silent_packet(packet: bytes) -> bool:
    """Whether an Opus packet is known to carry no audio from its size and TOC alone.

    A one-frame packet (code 0) of at most 2 bytes is a DTX or empty frame: libopus does
    not decode audio from a frame of 1 byte or less, it conceals. A CELT-only one-frame
    packet of 3 bytes is what libopus sends for digital silence in VBR (the silence flag
    and nothing more; a muted browser microphone). Everything else is decoded and its level
    judged: this rule only saves the decoder's work on frames that cannot be heard.
    """
    if not packet or packet[0] & 0x3:  # several frames (codes 1-3): decode
        return not packet
    return len(packet) <= 2 or (len(packet) == 3 and packet[0] >> 3 >= 16)


def mono_encoder(codec: str, sample_format: str, bitrate: int,
                 options: dict[str, str] | None = None) -> Any:
    """An open PyAV encoder of 48 kHz mono at ``bitrate``: the program's Opus, the AAC
    rendition and a speaker's uplink are all made by one."""
    ctx: Any = cast(Any, av.CodecContext.create(codec, "w"))
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.format = sample_format
    ctx.bit_rate = bitrate
    ctx.time_base = fractions.Fraction(1, SAMPLE_RATE)
    if options:
        ctx.options = options
    ctx.open()
    return ctx


def mono_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    """48 kHz mono int16 samples as a PyAV frame stamped ``pts``, for an encoder."""
    frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    return frame


class OpusEncoder:
    """One encoder per Space: the program is encoded once, whatever the audience."""

    def __init__(self, bitrate: int = 32_000) -> None:
        self._ctx = mono_encoder("libopus", "s16", bitrate)
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        """One 20 ms frame of int16 samples → one Opus packet."""
        frame = mono_frame(pcm, self._pts)
        self._pts += FRAME_SAMPLES
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


class OpusDecoder:
    """Opus packets back to int16 samples (tests, `townhall listen`, analysis)."""

    def __init__(self) -> None:
        self._ctx: Any = cast(Any, av.CodecContext.create("opus", "r"))
        self._ctx.sample_rate = SAMPLE_RATE
        self._ctx.layout = "mono"

    def decode(self, packet: bytes) -> np.ndarray:
        """One Opus packet to mono int16 samples (none while the decoder primes)."""
        out = [f.to_ndarray().reshape(-1) for f in self._ctx.decode(av.Packet(packet))]
        if not out:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(out)
        if pcm.dtype != np.int16:
            pcm = np.clip(pcm * 32767.0, -32768, 32767).astype(np.int16)
        return pcm


def _libopus() -> ctypes.CDLL:
    """The system libopus (Debian libopus0, pulled in by ffmpeg; see scripts/system-deps.sh)."""
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise RuntimeError("the stage needs the system libopus "
                           "(Debian/Ubuntu: apt install libopus0)") from exc
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
    lib.opus_decoder_ctl.restype = ctypes.c_int
    lib.opus_decoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    return lib


OPUS_RESET_STATE = 4028  # opus_defines.h


class OpusPacketDecoder:
    """libopus called directly: PyAV's decoder cannot run Opus PLC nor in-band FEC.

    ``decode`` a packet, ``conceal`` a lost one (PLC), or ``recover`` a lost one from the
    FEC data the *next* packet carries when the sender enabled ``useinbandfec``.
    """

    MAX_SAMPLES = 5760  # 120 ms, the longest Opus packet

    def __init__(self) -> None:
        self._lib = _libopus()
        err = ctypes.c_int(0)
        self._state = self._lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(err))
        if err.value != 0 or not self._state:
            raise RuntimeError(f"opus_decoder_create failed ({err.value})")
        self._pcm = (ctypes.c_int16 * self.MAX_SAMPLES)()

    def _run(self, data: bytes | None, samples: int, fec: int) -> np.ndarray:
        n = self._lib.opus_decode(self._state, data, len(data) if data else 0, self._pcm,
                                  samples, fec)
        if n < 0:
            raise ValueError(f"not a decodable Opus packet (libopus error {n})")
        return np.ctypeslib.as_array(self._pcm)[:n].copy()

    def decode(self, packet: bytes) -> np.ndarray:
        """One packet (10-120 ms) → int16 samples."""
        return self._run(packet, self.MAX_SAMPLES, 0)

    def conceal(self, samples: int = FRAME_SAMPLES) -> np.ndarray:
        """Packet loss concealment for one missing frame."""
        return self._run(None, samples, 0)

    def recover(self, next_packet: bytes, samples: int = FRAME_SAMPLES) -> np.ndarray:
        """The missing frame rebuilt from the next packet's in-band FEC (PLC if it has none)."""
        return self._run(next_packet, samples, 1)

    def reset(self) -> None:
        """Back to a fresh decoder's state (silence), as after skipped silent packets."""
        self._lib.opus_decoder_ctl(self._state, OPUS_RESET_STATE)

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            self._lib.opus_decoder_destroy(self._state)
            self._state = None
