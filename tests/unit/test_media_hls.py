"""fMP4 boxes and HLS playlists: parsed box by box, and read by ffprobe/ffmpeg."""

from __future__ import annotations

import struct
import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from tests.tone import ToneChunks
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.fmp4 import init_segment, media_segment, mp4_file
from townhall.media.hls import (
    AAC,
    ADVANCE_PARTS,
    OPUS,
    PART_SAMPLES,
    SEGMENT_SAMPLES,
    Directive,
    directive,
    live_playlist,
    master_playlist,
    packets_between,
    parse_name,
    segment_packets,
    vod_playlist,
    with_query,
)
from townhall.media.ogg import PRE_SKIP
from townhall.problems import BadInput


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    off = 0
    while off < len(data):
        size, kind = struct.unpack_from(">I4s", data, off)
        assert size >= 8
        out.append((kind, data[off + 8:off + size]))
        off += size
    assert off == len(data)
    return out


def test_media_segment_boxes_point_at_the_packets() -> None:
    packets = [bytes([i]) * (10 + i) for i in range(7)]
    seg = media_segment(packets, sequence=5, decode_time=3 * SEGMENT_SAMPLES)
    kinds = [k for k, _ in boxes(seg)]
    assert kinds == [b"styp", b"moof", b"mdat"]
    moof = dict(boxes(seg))[b"moof"]
    parts = dict(boxes(moof))
    assert struct.unpack_from(">I", parts[b"mfhd"], 4)[0] == 5
    traf = dict(boxes(parts[b"traf"]))
    assert struct.unpack_from(">Q", traf[b"tfdt"], 4)[0] == 3 * SEGMENT_SAMPLES
    count, offset = struct.unpack_from(">Ii", traf[b"trun"], 4)
    sizes = struct.unpack_from(f">{count}I", traf[b"trun"], 12)
    assert count == 7 and list(sizes) == [len(p) for p in packets]
    moof_start = seg.index(b"moof") - 4
    assert seg[moof_start + offset:] == b"".join(packets)  # data offset from the moof


def test_init_segment_declares_opus_at_48k(tmp_path: Path) -> None:
    init = init_segment()
    assert [k for k, _ in boxes(init)] == [b"ftyp", b"moov"]
    dops = init[init.index(b"dOps") + 4:]
    _, channels, pre_skip, rate = struct.unpack_from(">BBHI", dops)
    assert (channels, pre_skip, rate) == (1, PRE_SKIP, SAMPLE_RATE)


def test_ffmpeg_decodes_fragments_to_the_tone_without_reencoding(tmp_path: Path) -> None:
    chunks = list(islice(ToneChunks(440), 40))  # 4 s: two segments
    data = init_segment() + b"".join(
        media_segment(segment_packets(chunks, k), sequence=k + 1,
                      decode_time=k * SEGMENT_SAMPLES) for k in range(2))
    path = tmp_path / "t.mp4"
    path.write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name,sample_rate,channels", "-of", "csv=p=0",
                            str(path)], capture_output=True, text=True, check=True).stdout
    assert probe.strip() == "opus,48000,1"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw, dtype=np.int16).astype(np.float64)
    assert abs(len(pcm) - (4 * SAMPLE_RATE - PRE_SKIP)) <= FRAME_SAMPLES
    peak = np.argmax(np.abs(np.fft.rfft(pcm))) * SAMPLE_RATE / len(pcm)
    assert abs(peak - 440) < 5


def test_segments_are_cut_by_time_on_the_spaces_clock() -> None:
    a = Chunk(seq=0, pts=SEGMENT_SAMPLES - 2 * FRAME_SAMPLES, sent_us=0,
              packets=tuple(bytes([i]) for i in range(5)))
    assert segment_packets([a], 0) == [b"\x00", b"\x01"]
    assert segment_packets([a], 1) == [b"\x02", b"\x03", b"\x04"]
    assert segment_packets([a], 2) == []


def test_live_playlist_lists_complete_held_segments_only() -> None:
    assert live_playlist(SEGMENT_SAMPLES - 1, 0) is None  # the first is still being filled
    first = live_playlist(SEGMENT_SAMPLES, 0)
    assert first is not None and (first.first, first.last) == (0, 0)
    p = live_playlist(10 * SEGMENT_SAMPLES + 5, 0)
    assert p is not None and (p.first, p.last) == (4, 9)
    p = live_playlist(10 * SEGMENT_SAMPLES + 5, 7 * SEGMENT_SAMPLES + 1)
    assert p is not None and (p.first, p.last) == (8, 9)
    text = p.render()
    assert "#EXT-X-MEDIA-SEQUENCE:8" in text and "#EXT-X-ENDLIST" not in text
    assert [ln for ln in text.splitlines() if ln.endswith(".m4s")][-1] == "9.m4s"
    assert '#EXT-X-MAP:URI="init.mp4"' in text


def test_vod_playlist_ends_and_times_the_last_segment() -> None:
    p = vod_playlist(0, 3 * SEGMENT_SAMPLES + 10 * FRAME_SAMPLES)
    assert p is not None
    text = p.render()
    assert text.endswith("#EXT-X-ENDLIST\n") and "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert [ln for ln in text.splitlines() if ln.startswith("#EXTINF")] == [
        "#EXTINF:2.000,"] * 3 + ["#EXTINF:0.200,"]
    assert vod_playlist(5, 5) is None


def test_mp4_file_has_its_index_first_and_decodes_to_the_tone(tmp_path: Path) -> None:
    packets = [p for c in islice(ToneChunks(440), 30) for p in c.packets]
    data = mp4_file(packets)
    assert [k for k, _ in boxes(data)] == [b"ftyp", b"moov", b"mdat"]
    assert data.endswith(b"".join(packets))  # the very packets, nothing re-encoded
    path = tmp_path / "t.m4a"
    path.write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name,channels:format=duration", "-of", "csv=p=0",
                            str(path)], capture_output=True, text=True, check=True).stdout
    assert probe.split() == ["opus,1", "3.000000"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw, dtype=np.int16).astype(np.float64)
    assert len(pcm) == 150 * FRAME_SAMPLES - PRE_SKIP
    peak = np.argmax(np.abs(np.fft.rfft(pcm))) * SAMPLE_RATE / len(pcm)
    assert abs(peak - 440) < 5


def test_live_playlist_lists_parts_and_hints_the_next() -> None:
    # 10 segments and 2 parts (1 s) of the 11th.
    p = live_playlist(10 * SEGMENT_SAMPLES + 2 * PART_SAMPLES, 0)
    assert p is not None
    lines = p.render().splitlines()
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500" in lines
    assert "#EXT-X-PART-INF:PART-TARGET=0.500" in lines
    parts = [ln for ln in lines if ln.startswith("#EXT-X-PART:")]
    # The last complete segment's four parts come before it; then the two of the next.
    assert [ln.split('URI="')[1].split('"')[0] for ln in parts] == [
        "9.0.m4s", "9.1.m4s", "9.2.m4s", "9.3.m4s", "10.0.m4s", "10.1.m4s"]
    assert all("DURATION=0.500," in ln and "INDEPENDENT=YES" in ln for ln in parts)
    assert lines.index(parts[3]) < lines.index("9.m4s") < lines.index(parts[4])
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="10.2.m4s"'


def test_aac_parts_are_whole_frames() -> None:
    assert AAC.part_target == 24 * 1024 / 48_000  # frames cut by start: up to 24 of them
    p = live_playlist(3 * SEGMENT_SAMPLES, 0, AAC, lambda lo, hi: 1024 * (
        -(-hi // 1024) - -(-lo // 1024)))
    assert p is not None
    text = p.render()
    assert '#EXT-X-MAP:URI="aac-init.mp4"' in text and "aac-2.m4s" in text
    assert "#EXT-X-PART-INF:PART-TARGET=0.512" in text
    assert "#EXTINF:1.984," in text or "#EXTINF:2.005," in text


def test_names_of_resources() -> None:
    got = parse_name("opus.m3u8")
    assert got is not None and (got.rendition, got.kind) == (OPUS, "playlist")
    # The contract's URL: the Opus media playlist (the multivariant one is master.m3u8).
    got = parse_name("index.m3u8")
    assert got is not None and (got.rendition, got.kind) == (OPUS, "playlist")
    assert parse_name("master.m3u8") is None  # routed apart, never a media playlist
    got = parse_name("aac-12.3.m4s")
    assert got is not None and (got.rendition, got.kind, got.k, got.j) == (AAC, "part", 12, 3)
    got = parse_name("7.m4s")
    assert got is not None and (got.rendition, got.kind, got.k) == (OPUS, "segment", 7)
    assert parse_name("aac-init.mp4") is not None and parse_name("init.mp4") is not None
    for bad in ("index2.m3u8", "x.m4s", "1.4.m4s", "1.2.3.m4s", "-1.m4s", "1234567890.m4s",
                "aac-.m4s", "\u0661.m4s", "init.mp3", "1.m4a"):
        assert parse_name(bad) is None, bad


def test_master_lists_both_renditions_with_their_codecs() -> None:
    text = master_playlist([OPUS, AAC])
    assert text.splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="opus"', "opus.m3u8",
        '#EXT-X-STREAM-INF:BANDWIDTH=80000,CODECS="mp4a.40.2"', "aac.m3u8"]


def test_blocking_directives() -> None:
    assert directive(None, None) is None
    assert directive("12", None) == Directive(12)
    assert directive("12", "3") == Directive(12, 3)
    for msn, part in ((None, "1"), ("x", None), ("-1", None), ("1", "4"), ("1", "a"),
                      ("1.5", None), ("9999999999", None)):
        with pytest.raises(BadInput):
            directive(msn, part)
    now = 10 * SEGMENT_SAMPLES + PART_SAMPLES  # segments 0-9, part 10.0
    assert Directive(10).needed_end() == 11 * SEGMENT_SAMPLES
    assert Directive(10, 1).needed_end() == 10 * SEGMENT_SAMPLES + 2 * PART_SAMPLES
    assert not Directive(11).too_far(now)
    assert Directive(12).too_far(now)                 # more than two segments ahead
    assert not Directive(10, 1 + 0).too_far(now)
    last_part = now // PART_SAMPLES - 1
    far = last_part + ADVANCE_PARTS + 1
    assert Directive(far // 4, far % 4).too_far(now)


def test_parts_are_cut_by_time() -> None:
    a = Chunk(seq=0, pts=0, sent_us=0, packets=tuple(bytes([i]) for i in range(30)))
    assert packets_between([a], PART_SAMPLES, 2 * PART_SAMPLES) == [bytes([i])
                                                                    for i in range(25, 30)]


def test_a_query_is_carried_to_every_uri_a_playlist_lists() -> None:
    live = live_playlist(10 * SEGMENT_SAMPLES + 2 * PART_SAMPLES, 0)
    assert live is not None
    text = with_query(live.render(), "t=9.live.abc")
    uris = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    uris += [ln.split('URI="')[1].split('"')[0] for ln in text.splitlines() if 'URI="' in ln]
    # init (EXT-X-MAP), six segments, six parts and the preload hint: all carry it.
    assert len(uris) == 1 + 6 + 6 + 1
    assert all(u.endswith(".m4s?t=9.live.abc") or u == "init.mp4?t=9.live.abc"
               for u in uris), uris
    master = with_query(master_playlist([OPUS, AAC]), "t=x")
    assert [ln for ln in master.splitlines() if not ln.startswith("#")] == [
        "opus.m3u8?t=x", "aac.m3u8?t=x"]
    # Nothing else changes, and no query changes nothing.
    assert with_query(live.render(), "") == live.render()
    assert text.replace("?t=9.live.abc", "") == live.render()
