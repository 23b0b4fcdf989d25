"""The Ogg/Opus writer, checked against the spec's CRC and by real decoders."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tests.tone import ToneChunks
from townhall.media.ogg import OggOpusStream, ogg_crc, opus_head, page


def test_crc_matches_known_vector() -> None:
    # CRC-32/MPEG-2 style without init/xor ("CRC-32/OGG" check value for "123456789").
    assert ogg_crc(b"123456789") == 0x89A1897F
    assert ogg_crc(b"") == 0


def crc_by_definition(data: bytes) -> int:
    """Ogg's CRC bit by bit, straight from RFC 3533's definition."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def test_crc_via_zlib_equals_the_definition_on_random_pages() -> None:
    rng = np.random.default_rng(7)
    for size in (1, 2, 27, 255, 427, 4096, 65_307):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert ogg_crc(data) == crc_by_definition(data), size
    assert ogg_crc(b"\xff" * 64) == crc_by_definition(b"\xff" * 64)


def test_page_layout_and_crc() -> None:
    raw = page([b"x" * 300, b"yz"], serial=9, page_no=4, granule=1234, flags=2)
    magic, ver, flags, gran, serial, no, crc, nseg = struct.unpack_from("<4sBBqIIIB", raw)
    assert (magic, ver, flags, gran, serial, no, nseg) == (b"OggS", 0, 2, 1234, 9, 4, 3)
    assert raw[27:30] == bytes([255, 45, 2])
    assert crc == ogg_crc(raw[:22] + b"\0\0\0\0" + raw[26:])
    assert opus_head()[8:12] == bytes([1, 1]) + struct.pack("<H", 312)


def test_packet_of_exactly_255_bytes_gets_terminating_zero() -> None:
    raw = page([b"a" * 255], serial=1, page_no=0, granule=0)
    assert raw[26] == 2 and raw[27:29] == bytes([255, 0])


def _stream(tmp: Path, chunks: int, skip_first: int = 0) -> Path:
    ogg = OggOpusStream()
    tone = ToneChunks(440.0)
    body = [ogg.chunk_page(tone.next()) for _ in range(chunks)][skip_first:]
    path = tmp / "tone.opus"
    path.write_bytes(ogg.headers + b"".join(body))
    return path


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("skip_first", [0, 7])  # 7: a listener who joined mid-stream
def test_pyav_decodes_a_440_hz_tone(tmp_path: Path, skip_first: int) -> None:
    path = _stream(tmp_path, 30, skip_first)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name in ("opus", "libopus")
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert len(pcm) >= (30 - skip_first - 1) * 4800 * 0.9
    assert abs(_peak_hz(pcm.astype(np.float64), 48_000) - 440) < 5


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")
@pytest.mark.parametrize("skip_first", [0, 7])
def test_ffmpeg_decodes_to_wav(tmp_path: Path, skip_first: int) -> None:
    path = _stream(tmp_path, 30, skip_first)
    wav = tmp_path / "out.wav"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-ac", "1",
                          "-ar", "48000", "-f", "s16le", str(wav)],
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    pcm = np.frombuffer(wav.read_bytes(), dtype=np.int16).astype(np.float64)
    assert len(pcm) >= (30 - skip_first - 1) * 4800 * 0.9
    assert abs(_peak_hz(pcm, 48_000) - 440) < 5
