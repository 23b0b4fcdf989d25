"""The FEC plumbing with no network: the stage's answer asks for in-band FEC, the speaker's
encoder puts it in, and the simulated lossy uplink drops what it says it drops."""

from __future__ import annotations

import ctypes
import glob
import os

import av
import numpy as np
import pytest

from townhall.cli.speak import LossPattern, SpeakerEncoder, tone
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.stage.ingest import with_inband_fec

AIORTC_ANSWER = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\n"
                 "a=rtpmap:0 PCMU/8000\r\n")
CHROMIUM = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:111 opus/48000/2\r\n"
            "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n"
            "a=fmtp:63 111/111\r\n")


def test_answer_asks_for_inband_fec_once_per_opus_type() -> None:
    out = with_inband_fec(AIORTC_ANSWER)
    assert "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=10;useinbandfec=1\r\n" in out
    assert out.count("useinbandfec") == 1
    assert with_inband_fec(CHROMIUM) == CHROMIUM
    off = CHROMIUM.replace("useinbandfec=1", "useinbandfec=0")
    assert with_inband_fec(off) == CHROMIUM
    assert with_inband_fec(CHROMIUM.replace(";useinbandfec=1", "")) == CHROMIUM


def test_loss_pattern_is_seeded_with_bursts() -> None:
    a, b = LossPattern(0.1, seed=7, burst=3), LossPattern(0.1, seed=7, burst=3)
    drops = [a.drop() for _ in range(1000)]
    assert drops == [b.drop() for _ in range(1000)]
    assert all(drops[k:k + 3] == [True] * 3 for k in (250, 500, 750))
    assert a.sent == 1000 and a.dropped == sum(drops)
    assert 0.08 < a.dropped / a.sent < 0.15
    assert not any(LossPattern(0.0).drop() for _ in range(300))


def _bundled_libopus() -> ctypes.CDLL | None:
    """PyAV's own libopus (1.5+ has opus_packet_has_lbrr; Debian's 1.3 does not)."""
    libs = os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libopus*")
    for path in glob.glob(libs):
        lib = ctypes.CDLL(path)
        if hasattr(lib, "opus_packet_has_lbrr"):
            lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
            return lib
    return None


@pytest.mark.parametrize("expected_loss", [10, 0])
def test_speaker_packets_carry_fec_only_when_asked(expected_loss: int) -> None:
    lib = _bundled_libopus()
    if lib is None:
        pytest.skip("no libopus with opus_packet_has_lbrr to inspect packets")
    enc, pcm, flags = SpeakerEncoder(expected_loss=expected_loss), tone(440, 0.6), []
    for i in range(0, pcm.size, FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(pcm[i:i + FRAME_SAMPLES].reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        flags += [lib.opus_packet_has_lbrr(bytes(p), p.size) for p in enc.encode(frame)]
    assert len(flags) >= 25
    assert np.mean(flags[2:]) == (1.0 if expected_loss else 0.0)


def test_answer_lets_speakers_send_64_kbit_opus() -> None:
    from townhall.stage.ingest import with_max_bitrate
    out = with_max_bitrate(with_inband_fec(AIORTC_ANSWER))
    assert "a=fmtp:96 minptime=10;useinbandfec=1;maxaveragebitrate=64000\r\n" in out
    assert with_max_bitrate(out) == out
    assert "a=fmtp:0" not in out  # PCMU untouched
    mine = CHROMIUM.replace("useinbandfec=1", "useinbandfec=1;maxaveragebitrate=20000")
    assert with_max_bitrate(mine) == mine
