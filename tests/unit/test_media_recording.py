"""Recording cores: segments, the index, the replay file and clips, decoded by ffmpeg."""

from __future__ import annotations

import struct
import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from tests.tone import ToneChunks
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.ogg import PRE_SKIP
from townhall.media.recording import (
    PRE_ROLL_PACKETS,
    SILENT_PACKET,
    RecordingIndex,
    SegmentWriter,
    clip_file,
    decode_segment,
    encode_segment,
    ogg_file,
    replay_file,
    timeline,
)
from townhall.problems import BadInput


def pages(data: bytes) -> list[tuple[int, int, int, int]]:
    """(flags, granule, page_no, packets ending) of every Ogg page."""
    out = []
    off = 0
    while off < len(data):
        assert data[off:off + 4] == b"OggS"
        _, _, flags, granule, _, page_no, _, n = struct.unpack_from("<4sBBqIIIB", data, off)
        lacing = data[off + 27:off + 27 + n]
        out.append((flags, granule, page_no, sum(1 for v in lacing if v < 255)))
        off += 27 + n + sum(lacing)
    return out


def decode(data: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "f.opus"
    path.write_bytes(data)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float64)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(pcm))


def test_segments_round_trip_and_writer_drops_redeliveries() -> None:
    chunks = list(islice(ToneChunks(first_seq=10), 7))
    assert decode_segment(encode_segment(chunks)) == chunks
    with pytest.raises(BadInput):
        decode_segment(encode_segment(chunks)[:-3])
    writer = SegmentWriter(per_segment=3)
    got = [writer.add(c) for c in chunks[:4]]
    assert [g is None for g in got] == [True, True, False, True]
    assert writer.add(chunks[1]) is None  # redelivered after a restart: already recorded
    info, data = got[2]  # type: ignore[misc]
    assert (info.n, info.first_seq, info.last_seq) == (0, 10, 12)
    assert info.end_pts == chunks[2].pts + 5 * FRAME_SAMPLES
    assert decode_segment(data) == chunks[:3]
    flushed = writer.flush()
    assert flushed is not None and flushed[0].n == 1 and flushed[0].first_seq == 13


def test_index_round_trip_and_covering() -> None:
    writer = SegmentWriter(per_segment=2)
    index = RecordingIndex(space="abcdefghij")
    for chunk in islice(ToneChunks(), 6):
        done = writer.add(chunk)
        if done:
            index.segments.append(done[0])
    again = RecordingIndex.decode(index.encode())
    assert again == index
    assert again.duration_s() == pytest.approx(0.6)
    assert [s.n for s in index.covering(0, 1)] == [0]
    assert [s.n for s in index.covering(10 * FRAME_SAMPLES, 11 * FRAME_SAMPLES)] == [1]
    assert SegmentWriter.resume(index).last_seq == 6
    with pytest.raises(BadInput):
        RecordingIndex.decode(b"{}")


def test_timeline_fills_holes_with_silence_and_drops_overlaps() -> None:
    a = Chunk(seq=0, pts=0, sent_us=0, packets=(b"a",) * 5)
    b = Chunk(seq=2, pts=10 * FRAME_SAMPLES, sent_us=0, packets=(b"b",) * 5)  # seq 1 lost
    c = Chunk(seq=3, pts=13 * FRAME_SAMPLES, sent_us=0, packets=(b"c",) * 5)  # overlaps b
    got = list(timeline([a, b, c]))
    assert [p for _, p in got] == [b"a"] * 5 + [SILENT_PACKET] * 5 + [b"b"] * 5 + [b"c"] * 3
    assert [t for t, _ in got] == [i * FRAME_SAMPLES for i in range(18)]


def test_ogg_file_granules_and_flags() -> None:
    packets = [bytes([0xF8])] * 120
    f = ogg_file(packets)
    got = pages(f.data)
    assert got[0][0] == 0x02 and got[-1][0] == 0x04  # BOS first, EOS last
    assert [p[2] for p in got] == list(range(len(got)))
    media = got[2:]
    assert sum(p[3] for p in media) == 120
    # Each page's granule: samples up to the end of its last packet (pre-skip included).
    ends = np.cumsum([p[3] for p in media]) * FRAME_SAMPLES
    assert [p[1] for p in media] == list(ends)
    assert f.samples == 120 * FRAME_SAMPLES - PRE_SKIP
    trimmed = ogg_file(packets, pre_skip=1000, end_trim=500)
    assert pages(trimmed.data)[-1][1] == 120 * FRAME_SAMPLES - 500
    assert trimmed.samples == 120 * FRAME_SAMPLES - 500 - 1000


def test_replay_file_decodes_to_the_tones_for_the_whole_time(tmp_path: Path) -> None:
    chunks = list(islice(ToneChunks(440), 20))
    more = ToneChunks(880, first_seq=21)
    more._pts = chunks[-1].pts + 5 * FRAME_SAMPLES
    chunks += list(islice(more, 20))
    f = replay_file(chunks)
    pcm = decode(f.data, tmp_path)
    assert len(pcm) == 200 * FRAME_SAMPLES - PRE_SKIP == f.samples
    half = len(pcm) // 2
    assert abs(peak_hz(pcm[4800:half - 4800]) - 440) < 10
    assert abs(peak_hz(pcm[half + 4800:-4800]) - 880) < 10


def test_clip_is_cut_without_reencoding_with_pre_roll_as_pre_skip(tmp_path: Path) -> None:
    chunks = list(islice(ToneChunks(440), 40))  # 4 s
    start, samples = 17_000, SAMPLE_RATE  # 1 s from 0.354 s
    clip = clip_file(chunks, start, samples)
    head = clip.data[clip.data.index(b"OpusHead"):]
    pre_skip = struct.unpack_from("<H", head, 10)[0]
    assert pre_skip >= PRE_ROLL_PACKETS * FRAME_SAMPLES
    all_packets = [p for c in chunks for p in c.packets]
    first_kept = (start + PRE_SKIP) // FRAME_SAMPLES - PRE_ROLL_PACKETS
    assert all_packets[first_kept] in clip.data  # the very bytes: nothing re-encoded
    pcm = decode(clip.data, tmp_path)
    assert len(pcm) == samples == clip.samples
    assert abs(peak_hz(pcm) - 440) < 10
    # The tone is continuous from the first sample: the pre-roll warmed the decoder up.
    assert np.sqrt(np.mean(pcm[:960] ** 2)) > 5000
    with pytest.raises(BadInput):
        clip_file(chunks, 3 * SAMPLE_RATE, 2 * SAMPLE_RATE)  # runs past the end
    with pytest.raises(BadInput):
        clip_file(chunks[10:], 0, SAMPLE_RATE)  # before the first chunk held


def test_speaker_spans_map_levels_onto_the_replay() -> None:
    from townhall.media.recording import SegmentInfo, replay_time, speaker_spans

    second = SAMPLE_RATE
    index = RecordingIndex(space="abcdefghij", segments=[
        SegmentInfo(0, 0, 99, 0, 10 * second, 1, first_sent_us=1_000_000_000),
        # a failover: the next segment was sent 5 s later than its audio time says
        SegmentInfo(1, 100, 199, 10 * second, 20 * second, 1, first_sent_us=1_015_000_000)])
    assert replay_time(index, 999.0) is None
    assert replay_time(index, 1002.0) == pytest.approx(2.0)
    assert replay_time(index, 1012.0) is None  # the failover's hole: not in the audio
    assert replay_time(index, 1016.0) == pytest.approx(11.0)
    reports = [{"at": 1000.0 + t, "speaking": ["ada"]} for t in (1.0, 1.25, 1.5, 4.0)]
    reports += [{"at": 1016.0, "speaking": ["bob"]}, {"at": 1016.5, "speaking": ["bob"]}]
    assert speaker_spans(index, reports) == [
        {"id": "ada", "from": 1.0, "to": 1.75}, {"id": "ada", "from": 4.0, "to": 4.25},
        {"id": "bob", "from": 11.0, "to": 11.75}]


def test_clip_m4a_holds_the_same_packets_with_the_pre_roll_as_pre_skip(tmp_path: Path) -> None:
    from townhall.media.recording import clip_m4a, cut_clip

    chunks = list(islice(ToneChunks(440), 40))
    cut = cut_clip(chunks, 17_000, SAMPLE_RATE)
    data = clip_m4a(cut)
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
    at = data.index(b"dOps") + 6
    assert struct.unpack_from(">H", data, at)[0] == cut.pre_skip
    assert all(p in data for p in cut.packets)  # the very bytes
    path = tmp_path / "c.m4a"
    path.write_bytes(data)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw, dtype=np.int16).astype(np.float64)
    assert abs(len(pcm) - SAMPLE_RATE) <= FRAME_SAMPLES  # the end is not trimmed in MP4
    assert abs(peak_hz(pcm) - 440) < 10
    ogg = decode(clip_file(chunks, 17_000, SAMPLE_RATE).data, tmp_path)
    n = min(len(ogg), len(pcm))
    assert np.corrcoef(ogg[:n], pcm[:n])[0, 1] > 0.99  # the same audio, sample-aligned


def test_reaction_peaks_are_where_the_totals_rose_most() -> None:
    from townhall.media.recording import SegmentInfo, reaction_curve, reaction_peaks

    second = SAMPLE_RATE
    index = RecordingIndex(space="abcdefghij", segments=[
        SegmentInfo(0, 0, 599, 0, 60 * second, 1, first_sent_us=1_000_000_000)])
    reports: list[dict[str, object]] = [
        {"at": 999.0, "reactions": {"👏": 40}},            # before the recording: baseline
        {"at": 1002.0, "reactions": {"👏": 41}},
        {"at": 1021.0, "reactions": {"👏": 45, "🔥": 3}},   # 21 s: +4 👏, +3 🔥
        {"at": 1022.0, "reactions": {"👏": 46, "🔥": 9}},   # +1, +6 in the same bucket
        {"at": 1023.0, "speaking": ["ada"]},                # levels are not reactions
        {"at": 1041.0, "reactions": {"👏": 53, "🔥": 9}},   # 41 s: +7
        {"at": 1047.0, "reactions": {"👏": 54, "🔥": 9}},
        {"at": 1100.0, "reactions": {"👏": 99, "🔥": 9}}]   # after the recording: not in it
    curve = reaction_curve(index, reports)
    assert len(curve) == 12
    assert [sum(b.values()) for b in curve] == [1, 0, 0, 0, 14, 0, 0, 0, 7, 1, 0, 0]
    assert reaction_peaks(curve) == [{"at": 20.0, "count": 14, "emoji": "🔥"},
                                     {"at": 40.0, "count": 7, "emoji": "👏"}]
    assert reaction_peaks(curve, most=1) == [{"at": 20.0, "count": 14, "emoji": "🔥"}]
    assert reaction_peaks(reaction_curve(index, [])) == []
    # Adjacent busy buckets are one peak, at the busier one.
    flat = [{"👏": 5}, {"👏": 6}, {}, {"👏": 5}]
    assert [p["at"] for p in reaction_peaks(flat)] == [5.0, 15.0]
