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
        return self.segments[-1].last_seq if self.segments else -1

    @property
    def first_pts(self) -> int:
        return self.segments[0].first_pts if self.segments else 0

    @property
    def end_pts(self) -> int:
        return self.segments[-1].end_pts if self.segments else 0

    def duration_s(self) -> float:
        return (self.end_pts - self.first_pts) / SAMPLE_RATE

    def covering(self, start_pts: int, end_pts: int) -> list[SegmentInfo]:
        """The segments holding any audio of [start_pts, end_pts)."""
        return [s for s in self.segments if s.end_pts > start_pts and s.first_pts < end_pts]

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> RecordingIndex:
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


def clip_file(chunks: Iterable[Chunk], start_pts: int, samples: int) -> OggFile:
    """``samples`` of audio from ``start_pts`` (the Space's 48 kHz timeline), cut at packet
    boundaries with PRE_ROLL_PACKETS of pre-roll kept and marked as pre-skip, and the end
    trimmed by the last page's granule. BadInput when the chunks do not cover it."""
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
    chosen = [packet for _, packet in packets[begin:begin + count]]
    return ogg_file(chosen, pre_skip=pre_skip, end_trim=count * FRAME_SAMPLES - needed)


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
