"""The AAC rendition: program chunks transcoded to stamped AAC-LC frames, their wire form,
and fMP4 that ffprobe calls ``aac`` and ffmpeg decodes back to the tone."""

from __future__ import annotations

import struct
import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from tests.tone import ToneChunks
from townhall.media.aac import AacBatch, AacTranscoder
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.fmp4 import (
    AAC_FRAME_SAMPLES,
    AAC_LC_CONFIG,
    aac_init_segment,
    media_segment,
)
from townhall.media.hls import segment_of
from townhall.problems import BadInput
from townhall.recording.packager import runs, vod_segments


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(pcm))


def test_batch_round_trips_and_refuses_damage() -> None:
    batch = AacBatch(seq=7, pts=3 * AAC_FRAME_SAMPLES, src=41, frames=(b"ab", b"", b"c" * 300))
    assert AacBatch.decode(batch.encode()) == batch
    assert batch.end_pts == 6 * AAC_FRAME_SAMPLES
    assert [t for t, _ in batch.stamped()] == [3072, 4096, 5120]
    with pytest.raises(BadInput):
        AacBatch.decode(batch.encode()[:-1])
    with pytest.raises(BadInput):
        AacBatch.decode(b"THC1" + batch.encode()[4:])


def test_frames_are_stamped_on_the_spaces_clock_without_gaps() -> None:
    chunks = list(islice(ToneChunks(440), 30))  # 3 s
    tx = AacTranscoder()
    frames = [f for c in chunks for f in tx.push(c)]
    stamps = [t for t, _ in frames]
    assert stamps[0] == chunks[0].pts
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps) * AAC_FRAME_SAMPLES,
                                AAC_FRAME_SAMPLES))
    # All but the encoder's look-ahead is out: within two frames of the input.
    assert 3 * SAMPLE_RATE - stamps[-1] <= 3 * AAC_FRAME_SAMPLES
    # A redelivered chunk adds nothing; one after a hole is encoded at its own time.
    assert tx.push(chunks[-1]) == []
    later = Chunk(seq=99, pts=chunks[-1].pts + 20 * FRAME_SAMPLES, sent_us=0,
                  packets=chunks[0].packets)
    more = tx.push(later)
    assert more and more[0][0] == stamps[-1] + AAC_FRAME_SAMPLES  # the hole is silence
    assert tx.next_in == later.pts + later.duration_samples


def test_a_takeover_continues_the_stamps() -> None:
    chunks = list(islice(ToneChunks(440), 10))
    tx = AacTranscoder(start_pts=chunks[4].pts + 100)
    frames = [f for c in chunks for f in tx.push(c)]
    assert frames[0][0] == chunks[4].pts + 100  # nothing before where the last one ended


def test_runs_split_where_the_stamps_jump() -> None:
    f = [(0, b"a"), (1024, b"b"), (5000, b"c"), (6024, b"d")]
    assert [[t for t, _ in r] for r in runs(f)] == [[0, 1024], [5000, 6024]]


def test_init_segment_declares_aac_lc(tmp_path: Path) -> None:
    init = aac_init_segment()
    assert b"mp4a" in init and b"esds" in init
    esds = init[init.index(b"esds") + 8:]
    assert esds[0] == 3  # ES_Descriptor
    dsi = esds[esds.index(b"\x05\x02") + 2:][:2]
    assert dsi == AAC_LC_CONFIG
    trex = init[init.index(b"trex") + 8:]
    assert struct.unpack_from(">IIIII", trex)[2] == AAC_FRAME_SAMPLES


def test_ffmpeg_plays_the_aac_segments_as_the_tone(tmp_path: Path) -> None:
    chunks = list(islice(ToneChunks(440), 60))  # 6 s
    tx = AacTranscoder()
    frames = [f for c in chunks for f in tx.push(c)] + tx.finish()
    segments = vod_segments(frames)
    # Three segments, and the encoder's tail (priming shifts it past 6 s) in a fourth.
    assert sorted(segments) == [0, 1, 2, 3] and len(segments[3][1]) <= 2
    assert all(segment_of(segments[k][0]) == k for k in segments)
    data = aac_init_segment() + b"".join(
        media_segment(packed, sequence=k + 1, decode_time=stamp,
                      sample_duration=AAC_FRAME_SAMPLES)
        for k, (stamp, packed) in sorted(segments.items()))
    path = tmp_path / "a.mp4"
    path.write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name,profile,sample_rate,channels", "-of",
                            "csv=p=0", str(path)], capture_output=True, text=True,
                           check=True).stdout
    assert probe.strip() == "aac,LC,48000,1"
    pcm = decode(path)
    assert abs(len(pcm) - 6 * SAMPLE_RATE) <= 2 * AAC_FRAME_SAMPLES
    assert abs(peak_hz(pcm[SAMPLE_RATE:5 * SAMPLE_RATE]) - 440) < 5
