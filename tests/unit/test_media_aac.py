"""The AAC rendition: program chunks transcoded to stamped AAC-LC frames, their wire form,
and fMP4 that ffprobe calls ``aac`` and ffmpeg decodes back to the tone."""

from __future__ import annotations

import struct
import subprocess
from itertools import islice
from pathlib import Path

import av
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
from townhall.media.opus import OpusEncoder, OpusPacketDecoder
from townhall.problems import BadInput
from townhall.recording.aacpackager import runs, vod_segments


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
    # All but the encoder's look-ahead is out: the last frame out (stamped with the time
    # of the audio it plays) ends within three frames of the input.
    assert 3 * SAMPLE_RATE - (stamps[-1] + AAC_FRAME_SAMPLES) <= 3 * AAC_FRAME_SAMPLES
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
    # Three segments: frames are stamped with the time they play, the encoder's delay
    # taken off, so its tail ends with the 6 s of input.
    assert sorted(segments) == [0, 1, 2]
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


def chirp_chunks(seconds: int = 2) -> list[Chunk]:
    """Silence, then from 0.5 s a rising chirp: no two stretches alike, so lining two
    renditions up by cross-correlation has one answer."""
    t = np.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    pcm = np.where(t >= 0.5, np.sin(2 * np.pi * (200 * t + 1000 * (t - 0.5) ** 2)) * 12_000,
                   0).astype(np.int16)
    enc = OpusEncoder()
    packets = [enc.encode(pcm[i:i + FRAME_SAMPLES]) for i in range(0, pcm.size, FRAME_SAMPLES)]
    return [Chunk(seq=n + 1, pts=n * 5 * FRAME_SAMPLES, sent_us=0,
                  packets=tuple(packets[n * 5:n * 5 + 5])) for n in range(len(packets) // 5)]


def aac_pcm(frames: list[tuple[int, bytes]]) -> np.ndarray:
    """The frames decoded in order, as a player decodes a segment from its decode time."""
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = AAC_LC_CONFIG
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    out = [f.to_ndarray().reshape(-1) for _, data in frames for f in ctx.decode(av.Packet(data))]
    pcm = np.concatenate(out).astype(np.float64)
    return pcm * 32767 if np.abs(pcm).max() <= 1.0 else pcm  # float planar, or s16


def lag_of(opus: np.ndarray, frames: list[tuple[int, bytes]], lo: int, hi: int) -> int:
    """How many samples the decoded AAC frames play later than the Opus, both on the
    Space's clock: Opus from its chunks' pts, AAC from its first stamp (a segment's decode
    time, tfdt), compared over Space time [lo, hi)."""
    decoded = aac_pcm(frames)
    start = frames[0][0]
    aac = np.zeros(opus.size + 4 * AAC_FRAME_SAMPLES)
    n = min(decoded.size, aac.size - start)
    aac[start:start + n] = decoded[:n]
    window = opus[lo:hi]
    return max(range(-2 * AAC_FRAME_SAMPLES, 2 * AAC_FRAME_SAMPLES),
               key=lambda lag: float(np.dot(window, aac[lo + lag:hi + lag])))


def test_aac_lines_up_with_opus_sample_for_sample() -> None:
    chunks = chirp_chunks()
    dec = OpusPacketDecoder()
    opus = np.concatenate([dec.decode(p) for c in chunks for p in c.packets]).astype(float)
    tx = AacTranscoder()
    frames = [f for c in chunks for f in tx.push(c)] + tx.finish()
    assert frames[0][0] == 0  # the priming frame, before the Space's start, is dropped
    lag = lag_of(opus, frames, int(0.6 * SAMPLE_RATE), int(1.6 * SAMPLE_RATE))
    assert abs(lag) <= 16, lag  # was 1024: the encoder's priming frame, 21 ms late
    # A takeover's encoder continues the stamps and lines up just the same.
    later = AacTranscoder(start_pts=frames[40][0])
    again = [f for c in chunks for f in later.push(c)]
    assert again[0][0] == frames[40][0]
    lo = again[0][0] + 3 * AAC_FRAME_SAMPLES  # past its priming frame and fade-in
    lag = lag_of(opus, again, lo, lo + int(0.8 * SAMPLE_RATE))
    assert abs(lag) <= 16, lag
