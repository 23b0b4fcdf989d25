"""A recording's pieces, with no I/O: segments of chunks, the index, and the finished
Ogg/Opus file (and clips) built from the packets without re-encoding.

A recording is stored as segments (about 10 s of chunks each, in the chunks' own wire form,
so sequence numbers and timestamps survive) plus an index that lists them. The replay
file and clips are cut from the segments' packets: Opus is never decoded here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.fmp4 import mp4_file
from townhall.media.ogg import FLAG_BOS, FLAG_EOS, PRE_SKIP, opus_head, opus_tags, page
from townhall.problems import BadInput

SEGMENT_CHUNKS = 100          # 100 chunks of 100 ms: 10 s per segment
PRE_ROLL_PACKETS = 4          # 80 ms decoded and thrown away before a clip starts
# A 20 ms CELT frame of zero length (TOC config 31, one frame): decoders play it as
# silence / concealment. Fills holes in the timeline so the file keeps real time.
SILENT_PACKET = b"\xf8"
MAX_GAP_PACKETS = 50 * 60     # fill at most a minute of missing audio per hole
PACKETS_PER_PAGE = 50         # one page per second of audio
_LEN = struct.Struct(">I")


def encode_segment(chunks: Iterable[Chunk]) -> bytes:
    """Chunks in their wire form, each behind a u32 length."""
    parts: list[bytes] = []
    for chunk in chunks:
        raw = chunk.encode()
        parts += [_LEN.pack(len(raw)), raw]
    return b"".join(parts)


def decode_segment(data: bytes) -> list[Chunk]:
    """The chunks of one segment, in order; BadInput if it is damaged."""
    out: list[Chunk] = []
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise BadInput("segment truncated", slug="bad-segment")
        (size,) = _LEN.unpack_from(data, off)
        off += 4
        if off + size > len(data):
            raise BadInput("segment truncated", slug="bad-segment")
        out.append(Chunk.decode(data[off:off + size]))
        off += size
    return out


@dataclass(frozen=True)
class SegmentInfo:
    """Where one segment sits in the recording."""

    n: int
    first_seq: int
    last_seq: int
    first_pts: int
    end_pts: int
    size: int
    first_sent_us: int = 0  # the stage's wall clock at the first chunk (levels map by it)


@dataclass
class RecordingIndex:
    """The list of a recording's segments and levels, stored next to them as JSON."""

    space: str
    segments: list[SegmentInfo] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)  # segment numbers with a levels object
    done: bool = False

    @property
    def last_seq(self) -> int:
        """The sequence number of the last chunk recorded; -1 before the first."""
        return self.segments[-1].last_seq if self.segments else -1

    @property
    def first_pts(self) -> int:
        """The stamp of the recording's first audio (48 kHz, the Space's clock)."""
        return self.segments[0].first_pts if self.segments else 0

    @property
    def end_pts(self) -> int:
        """The stamp just after the recording's last audio."""
        return self.segments[-1].end_pts if self.segments else 0

    def duration_s(self) -> float:
        """Seconds of the Space's timeline the recording spans."""
        return (self.end_pts - self.first_pts) / SAMPLE_RATE

    def covering(self, start_pts: int, end_pts: int) -> list[SegmentInfo]:
        """The segments holding any audio of [start_pts, end_pts)."""
        return [s for s in self.segments if s.end_pts > start_pts and s.first_pts < end_pts]

    def encode(self) -> bytes:
        """The index as compact JSON, as stored."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> RecordingIndex:
        """An index stored by ``encode``; BadInput if it is not one."""
        try:
            raw: dict[str, Any] = json.loads(data)
            return cls(space=str(raw["space"]),
                       segments=[SegmentInfo(**s) for s in raw.get("segments", [])],
                       levels=[int(n) for n in raw.get("levels", [])],
                       done=bool(raw.get("done")))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput("recording index damaged", slug="bad-index") from exc


@dataclass
class SegmentWriter:
    """Collects chunks in order into segments; a chunk already recorded (a redelivery
    after a restart) is dropped by its sequence number."""

    next_n: int = 0
    last_seq: int = -1
    per_segment: int = SEGMENT_CHUNKS
    _chunks: list[Chunk] = field(default_factory=list)

    @classmethod
    def resume(cls, index: RecordingIndex) -> SegmentWriter:
        """A writer that carries on after the segments ``index`` already lists."""
        return cls(next_n=len(index.segments), last_seq=index.last_seq)

    def add(self, chunk: Chunk) -> tuple[SegmentInfo, bytes] | None:
        """Take one chunk; a full segment comes back to be stored."""
        if chunk.seq <= self.last_seq:
            return None
        self.last_seq = chunk.seq
        self._chunks.append(chunk)
        if len(self._chunks) >= self.per_segment:
            return self.flush()
        return None

    @property
    def pending(self) -> int:
        """Chunks in the open segment, not stored yet."""
        return len(self._chunks)

    def flush(self) -> tuple[SegmentInfo, bytes] | None:
        """Close the open segment (if it has anything)."""
        if not self._chunks:
            return None
        chunks, self._chunks = self._chunks, []
        data = encode_segment(chunks)
        last = chunks[-1]
        info = SegmentInfo(n=self.next_n, first_seq=chunks[0].seq, last_seq=last.seq,
                           first_pts=chunks[0].pts, end_pts=last.pts + last.duration_samples,
                           size=len(data), first_sent_us=chunks[0].sent_us)
        self.next_n += 1
        return info, data


def timeline(chunks: Iterable[Chunk]) -> Iterator[tuple[int, bytes]]:
    """(pts, packet) of every 20 ms packet in time order: holes in pts are filled with
    silent packets (up to MAX_GAP_PACKETS), overlaps dropped."""
    expected: int | None = None
    for chunk in chunks:
        pts = chunk.pts
        if expected is not None:
            gap = (pts - expected) // FRAME_SAMPLES
            if gap < 0:  # overlaps what was already played: keep the newer part only
                skip = min(-gap, len(chunk.packets))
                pts += skip * FRAME_SAMPLES
                for packet in chunk.packets[skip:]:
                    yield pts, packet
                    pts += FRAME_SAMPLES
                expected = max(expected, pts)
                continue
            for i in range(min(gap, MAX_GAP_PACKETS)):
                yield expected + i * FRAME_SAMPLES, SILENT_PACKET
            if gap > MAX_GAP_PACKETS:
                pts = expected + MAX_GAP_PACKETS * FRAME_SAMPLES  # shorten the hole
        for packet in chunk.packets:
            yield pts, packet
            pts += FRAME_SAMPLES
        expected = pts


@dataclass(frozen=True)
class OggFile:
    """A complete Ogg/Opus file and what it holds."""

    data: bytes
    samples: int  # decoded samples after pre-skip

    @property
    def duration_s(self) -> float:
        """The file's length in seconds."""
        return self.samples / SAMPLE_RATE


def ogg_file(packets: list[bytes], *, pre_skip: int = PRE_SKIP, end_trim: int = 0,
             serial: int = 0x7448_0002) -> OggFile:
    """One seekable Ogg/Opus file: headers, then pages of whole packets whose granule
    positions count samples from the file's start (pre-skip included, RFC 7845 §4); the
    last page's granule cuts ``end_trim`` samples off the end."""
    out = [page([opus_head(pre_skip=pre_skip)], serial=serial, page_no=0, granule=0,
                flags=FLAG_BOS),
           page([opus_tags()], serial=serial, page_no=1, granule=0)]
    total = len(packets) * FRAME_SAMPLES
    final = max(total - end_trim, pre_skip)
    if not packets:
        out.append(page([], serial=serial, page_no=2, granule=0, flags=FLAG_EOS))
        return OggFile(b"".join(out), 0)
    groups: list[list[bytes]] = [[]]
    lacing = 0
    for packet in packets:
        need = len(packet) // 255 + 1
        if len(groups[-1]) >= PACKETS_PER_PAGE or lacing + need > 255:
            groups.append([])
            lacing = 0
        groups[-1].append(packet)
        lacing += need
    done = 0
    for i, group in enumerate(groups):
        done += len(group)
        last = i == len(groups) - 1
        out.append(page(group, serial=serial, page_no=2 + i,
                        granule=final if last else done * FRAME_SAMPLES,
                        flags=FLAG_EOS if last else 0))
    return OggFile(b"".join(out), final - pre_skip)


def replay_file(chunks: Iterable[Chunk]) -> OggFile:
    """The whole recording as one file: every packet, holes filled with silence."""
    return ogg_file([packet for _, packet in timeline(chunks)])


@dataclass(frozen=True)
class ClipCut:
    """Where a clip sits in the recording's packets: what both clip files are made of."""

    packets: list[bytes]
    pre_skip: int   # samples decoded and thrown away first (pre-roll + decoder delay)
    end_trim: int   # samples of the last packet past the clip's end

    @property
    def samples(self) -> int:
        """The clip's length in samples, once pre-skip and end trim are taken off."""
        return len(self.packets) * FRAME_SAMPLES - self.pre_skip - self.end_trim


def cut_clip(chunks: Iterable[Chunk], start_pts: int, samples: int) -> ClipCut:
    """``samples`` of audio from ``start_pts`` (the Space's 48 kHz timeline), cut at packet
    boundaries with PRE_ROLL_PACKETS of pre-roll kept as pre-skip, the end's excess said
    as a trim. BadInput when the chunks do not cover it."""
    # A decoder's output lags the encoder's input by PRE_SKIP: input sample s comes out of
    # the packet whose pts covers s + PRE_SKIP.
    want = start_pts + PRE_SKIP
    packets = list(timeline(chunks))
    first = next((i for i, (pts, _) in enumerate(packets)
                  if pts <= want < pts + FRAME_SAMPLES), None)
    if first is None:
        raise BadInput("the recording does not cover the clip's start", slug="clip-outside")
    begin = max(first - PRE_ROLL_PACKETS, 0)
    pre_skip = want - packets[begin][0]
    needed = pre_skip + samples
    count = -(-needed // FRAME_SAMPLES)
    if begin + count > len(packets):
        raise BadInput("the recording does not cover the clip's end", slug="clip-outside")
    return ClipCut([packet for _, packet in packets[begin:begin + count]], pre_skip,
                   count * FRAME_SAMPLES - needed)


def clip_file(chunks: Iterable[Chunk], start_pts: int, samples: int) -> OggFile:
    """The clip (see cut_clip) as Ogg/Opus: pre-skip in OpusHead, the end trimmed by the
    last page's granule."""
    cut = cut_clip(chunks, start_pts, samples)
    return ogg_file(cut.packets, pre_skip=cut.pre_skip, end_trim=cut.end_trim)


def clip_m4a(cut: ClipCut) -> bytes:
    """The clip as Opus in MP4 (index first): the same packets, the pre-roll as the
    ``dOps`` pre-skip. MP4 has no granule to trim the end with short of an edit list,
    so the file runs to the end of its last packet (under 20 ms more than the Ogg clip)."""
    data = mp4_file(cut.packets)
    at = data.index(b"dOps") + 4 + 2  # box type, then version (u8) and channels (u8)
    return data[:at] + struct.pack(">H", cut.pre_skip) + data[at + 2:]


def replay_time(index: RecordingIndex, at: float) -> float | None:
    """Where wall time ``at`` (the stage's clock, as in levels reports) falls in the replay,
    in seconds; None outside the recording."""
    for seg in reversed(index.segments):
        start = seg.first_sent_us / 1e6
        if seg.first_sent_us and at >= start:
            offset = (seg.first_pts - index.first_pts) / SAMPLE_RATE + (at - start)
            if offset <= (seg.end_pts - index.first_pts) / SAMPLE_RATE:
                return offset
            return None
    return None


def speaker_spans(index: RecordingIndex, reports: Iterable[dict[str, Any]],
                  gap_s: float = 1.0) -> list[dict[str, Any]]:
    """Who spoke when in the replay: ``[{"id", "from", "to"}]`` (seconds), from the stage's
    levels reports (``{"at", "speaking": [...]}``); pauses under ``gap_s`` are bridged."""
    open_spans: dict[str, list[float]] = {}
    done: list[dict[str, Any]] = []
    for report in sorted(reports, key=lambda r: float(r.get("at") or 0)):
        t = replay_time(index, float(report.get("at") or 0))
        if t is None:
            continue
        for who in report.get("speaking") or []:
            span = open_spans.get(str(who))
            if span is not None and t - span[1] <= gap_s:
                span[1] = t
            else:
                if span is not None:
                    done.append({"id": str(who), "from": span[0], "to": span[1]})
                open_spans[str(who)] = [t, t]
    done += [{"id": who, "from": a, "to": b} for who, (a, b) in open_spans.items()]
    return sorted(({"id": d["id"], "from": round(d["from"], 2), "to": round(d["to"] + 0.25, 2)}
                   for d in done), key=lambda d: (d["from"], d["id"]))


PEAK_BUCKET_S = 5.0     # reactions are counted per 5 s of the replay
PEAKS_MAX = 5
PEAK_MIN = 3            # fewer reactions than this in a bucket is no peak


def reaction_curve(index: RecordingIndex, reports: Iterable[dict[str, Any]],
                   bucket_s: float = PEAK_BUCKET_S) -> list[dict[str, int]]:
    """Reactions per ``bucket_s`` of the replay, per emoji, from the running totals the
    recorder kept (``{"at", "reactions": {emoji: total}}``, wall time): each rise of a
    total counts where it happened. Totals from before the recording are the baseline."""
    buckets: list[dict[str, int]] = [
        {} for _ in range(max(1, int(-(-index.duration_s() // bucket_s))))]
    last: dict[str, int] = {}
    seen = False
    samples = [r for r in reports if isinstance(r.get("reactions"), dict)]
    for report in sorted(samples, key=lambda r: float(r.get("at") or 0)):
        totals = {str(k): int(v) for k, v in report["reactions"].items()
                  if isinstance(v, int | float)}
        t = replay_time(index, float(report.get("at") or 0))
        for emoji, total in totals.items():
            rise = total - last.get(emoji, total if not seen else 0)
            if rise > 0 and t is not None:
                slot = buckets[min(int(t // bucket_s), len(buckets) - 1)]
                slot[emoji] = slot.get(emoji, 0) + rise
            last[emoji] = max(total, last.get(emoji, 0))
        seen = True
    return buckets


def reaction_peaks(curve: list[dict[str, int]], bucket_s: float = PEAK_BUCKET_S,
                   most: int = PEAKS_MAX) -> list[dict[str, Any]]:
    """Where the reactions peaked: up to ``most`` buckets that hold at least PEAK_MIN and
    at least half of the busiest one, no two adjacent, in replay order:
    ``[{"at": seconds, "count", "emoji": the commonest}]``."""
    counts = [sum(b.values()) for b in curve]
    floor = max(PEAK_MIN, (max(counts, default=0) + 1) // 2)
    chosen: list[int] = []
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        if counts[i] < floor or len(chosen) >= most:
            break
        if all(abs(i - j) > 1 for j in chosen):
            chosen.append(i)
    return [{"at": round(i * bucket_s, 2), "count": counts[i],
             "emoji": max(sorted(curve[i]), key=lambda e: curve[i][e])}
            for i in sorted(chosen)]
