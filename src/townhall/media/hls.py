"""HLS playlists, the segment and part plan of a Space, and the names of its resources,
with no I/O.

Segment ``k`` of a rendition holds the frames whose 48 kHz time (the chunks' ``pts``, 0 at
the Space's start; for AAC the frames' stamps, townhall.media.aac) falls in
``[k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES)``; part ``j`` of it the frames in the
``j``-th half second of that. Every node computes the same segments and parts from the same
frames, so a CDN may pull any of them from any node. Low-latency HLS (RFC 8216bis: parts,
blocking playlist reload) is on in live playlists; players that know nothing of it read
the whole segments as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.fmp4 import AAC_FRAME_SAMPLES
from townhall.media.recording import timeline
from townhall.problems import BadInput

SEGMENT_SAMPLES = 2 * SAMPLE_RATE   # 2 s segments
TARGET_S = SEGMENT_SAMPLES // SAMPLE_RATE
PART_SAMPLES = SAMPLE_RATE // 2     # 0.5 s parts (5 program chunks)
PARTS = SEGMENT_SAMPLES // PART_SAMPLES
LIVE_WINDOW = 6                     # segments listed in a live playlist
BLOCK_S = 3.0 * TARGET_S            # a blocking reload waits at most this long (the spec's cap)
# How far ahead a blocking request may point before it is nonsense (RFC 8216bis 6.2.5.2):
# two segments past the last one, or three seconds' worth of parts past the last part.
ADVANCE_SEGMENTS = 2
ADVANCE_PARTS = math.ceil(3 * SAMPLE_RATE / PART_SAMPLES)


@dataclass(frozen=True)
class Rendition:
    """One audio rendition: its codec, its frames' length and its resources' names."""

    name: str       # the media playlist is ``<name>.m3u8``
    codecs: str     # RFC 6381, for EXT-X-STREAM-INF
    bandwidth: int  # bits/s, peak, for EXT-X-STREAM-INF
    frame: int      # samples per frame (packet)
    prefix: str     # of init and segment names

    @property
    def part_target(self) -> float:
        """The longest part: frames are cut by their start, so a part may run a frame
        past its half second when frames do not divide it."""
        return math.ceil(PART_SAMPLES / self.frame) * self.frame / SAMPLE_RATE

    @property
    def init_name(self) -> str:
        """The name of the rendition's init segment."""
        return f"{self.prefix}init.mp4"

    def segment_name(self, k: int) -> str:
        """The name of segment ``k``."""
        return f"{self.prefix}{k}.m4s"

    def part_name(self, k: int, j: int) -> str:
        """The name of part ``j`` of segment ``k``."""
        return f"{self.prefix}{k}.{j}.m4s"


OPUS = Rendition("opus", "opus", 64_000, FRAME_SAMPLES, "")
AAC = Rendition("aac", "mp4a.40.2", 80_000, AAC_FRAME_SAMPLES, "aac-")
RENDITIONS = {r.name: r for r in (OPUS, AAC)}


@dataclass(frozen=True)
class Resource:
    """What a name under ``/hls/<id>/`` asks for: ``kind`` is playlist, init, segment or
    part (``k``: segment, ``j``: part)."""

    rendition: Rendition
    kind: str
    k: int = 0
    j: int = 0


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 9 else None


def parse_name(name: str) -> Resource | None:
    """``index.m3u8`` (= ``opus.m3u8``), ``aac.m3u8``; ``init.mp4``, ``<k>.m4s``,
    ``<k>.<j>.m4s`` (Opus); the same with ``aac-`` in front (AAC). None for anything else.

    ``index.m3u8`` is the Opus media playlist, the contract's URL since before there
    was an AAC rendition (live, then VOD ending ``#EXT-X-ENDLIST``); ``master.m3u8`` is
    the multivariant playlist and is routed apart."""
    if name == "index.m3u8":
        return Resource(OPUS, "playlist")
    if name.endswith(".m3u8"):
        r = RENDITIONS.get(name.removesuffix(".m3u8"))
        return Resource(r, "playlist") if r is not None else None
    rendition = AAC if name.startswith(AAC.prefix) else OPUS
    rest = name.removeprefix(rendition.prefix)
    if rest == "init.mp4":
        return Resource(rendition, "init")
    if not rest.endswith(".m4s"):
        return None
    numbers = rest.removesuffix(".m4s").split(".")
    parsed = [_number(n) for n in numbers]
    if len(parsed) == 1 and parsed[0] is not None:
        return Resource(rendition, "segment", parsed[0])
    if len(parsed) == 2 and parsed[0] is not None and parsed[1] is not None \
            and parsed[1] < PARTS:
        return Resource(rendition, "part", parsed[0], parsed[1])
    return None


def segment_of(pts: int) -> int:
    """The segment the frame stamped ``pts`` falls in."""
    return pts // SEGMENT_SAMPLES


def segment_bounds(k: int) -> tuple[int, int]:
    """Segment ``k``'s samples, ``[lo, hi)`` on the Space's 48 kHz clock."""
    return k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES


def part_bounds(k: int, j: int) -> tuple[int, int]:
    """Part ``j`` of segment ``k``'s samples, ``[lo, hi)``."""
    lo = k * SEGMENT_SAMPLES + j * PART_SAMPLES
    return lo, lo + PART_SAMPLES


def packets_between(chunks: Iterable[Chunk], lo: int, hi: int) -> list[bytes]:
    """The Opus packets in ``[lo, hi)`` (holes inside filled with silence)."""
    return [p for pts, p in timeline(chunks) if lo <= pts < hi]


def segment_packets(chunks: Iterable[Chunk], k: int) -> list[bytes]:
    """The packets of segment ``k`` (holes inside filled with silence)."""
    return packets_between(chunks, *segment_bounds(k))


def frames_between(frames: Mapping[int, bytes], lo: int, hi: int
                   ) -> tuple[int, list[bytes]]:
    """(stamp of the first, frames) of the stamped frames in ``[lo, hi)``, in order."""
    stamps = sorted(t for t in frames if lo <= t < hi)
    return (stamps[0] if stamps else lo), [frames[t] for t in stamps]


Durations = Callable[[int, int], int]  # samples held in [lo, hi)


def whole(lo: int, hi: int) -> int:
    """Opus: every slot is filled (with silence if need be)."""
    return hi - lo


@dataclass(frozen=True)
class Part:
    """Part ``j`` of segment ``k``, listed in a low-latency playlist, ``samples`` long."""

    k: int
    j: int
    samples: int


@dataclass(frozen=True)
class Playlist:
    """A media playlist: segments ``first ..`` with their lengths in samples; ``ended``
    adds ENDLIST; ``parts`` and ``hint`` make it a low-latency one."""

    rendition: Rendition
    first: int
    lengths: tuple[int, ...]
    ended: bool
    parts: tuple[Part, ...] = ()
    hint: tuple[int, int] | None = None

    @property
    def last(self) -> int:
        """The number of the playlist's last segment."""
        return self.first + len(self.lengths) - 1

    def render(self) -> str:
        """The playlist's text (``#EXTM3U`` ...)."""
        r = self.rendition
        low_latency = bool(self.parts)
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{9 if low_latency else 7}",
                 f"#EXT-X-TARGETDURATION:{TARGET_S}"]
        if low_latency:
            lines += ["#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                      f"PART-HOLD-BACK={3 * r.part_target:.3f}",
                      f"#EXT-X-PART-INF:PART-TARGET={r.part_target:.3f}"]
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.first}")
        if self.ended:
            lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
        lines.append(f'#EXT-X-MAP:URI="{r.init_name}"')
        by_segment: dict[int, list[Part]] = {}
        for part in self.parts:
            by_segment.setdefault(part.k, []).append(part)
        for i, samples in enumerate(self.lengths):
            k = self.first + i
            lines += self._parts(by_segment.pop(k, []))
            lines += [f"#EXTINF:{samples / SAMPLE_RATE:.3f},", r.segment_name(k)]
        for k in sorted(by_segment):  # the segment being filled
            lines += self._parts(by_segment[k])
        if self.hint is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{r.part_name(*self.hint)}"')
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _parts(self, parts: list[Part]) -> list[str]:
        return [f"#EXT-X-PART:DURATION={p.samples / SAMPLE_RATE:.3f},"
                f'URI="{self.rendition.part_name(p.k, p.j)}",INDEPENDENT=YES' for p in parts]


def live_playlist(newest_end_pts: int, oldest_pts: int, rendition: Rendition = OPUS,
                  durations: Durations = whole) -> Playlist | None:
    """The live window: complete segments only (the one being filled is left out), never
    older than what is still held from ``oldest_pts``; the parts of the last complete
    segment and of the one being filled, and a hint of the next part."""
    complete = segment_of(newest_end_pts) - 1
    if complete < 0:
        return None
    held_from = -(-oldest_pts // SEGMENT_SAMPLES)  # the first segment held whole
    first = max(complete - LIVE_WINDOW + 1, held_from)
    if first > complete:
        return None
    lengths = tuple(durations(*segment_bounds(k)) for k in range(first, complete + 1))
    parts = tuple(Part(k, j, durations(*part_bounds(k, j)))
                  for k in (complete, complete + 1) for j in range(PARTS)
                  if part_bounds(k, j)[1] <= newest_end_pts)
    nxt = newest_end_pts // PART_SAMPLES
    return Playlist(rendition, first, lengths, ended=False, parts=parts,
                    hint=(nxt // PARTS, nxt % PARTS))


def vod_playlist(first_pts: int, end_pts: int) -> Playlist | None:
    """Every Opus segment of a finished recording."""
    if end_pts <= first_pts:
        return None
    first, last = segment_of(first_pts), segment_of(end_pts - 1)
    tail = end_pts - last * SEGMENT_SAMPLES
    lengths = [SEGMENT_SAMPLES] * (last - first) + [-(-tail // FRAME_SAMPLES) * FRAME_SAMPLES]
    return Playlist(OPUS, first, tuple(lengths), ended=True)


def master_playlist(renditions: Sequence[Rendition]) -> str:
    """The multivariant playlist (``master.m3u8``): one variant per rendition."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in renditions:
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={r.bandwidth},CODECS="{r.codecs}"',
                  f"{r.name}.m3u8"]
    return "\n".join(lines) + "\n"


_URI_ATTR = re.compile(r'URI="([^"?]*)"')


def with_query(text: str, query: str) -> str:
    """``text`` (a playlist) with ``?<query>`` on every URI it lists: segments, variants,
    and the ``URI=`` of maps, parts and hints. A player asks for a URI as listed, so a
    signed link's ticket (``t=...``) reaches every resource this way."""
    if not query:
        return text
    lines = [f"{ln}?{query}" if ln and not ln.startswith("#")
             else _URI_ATTR.sub(lambda m: f'URI="{m.group(1)}?{query}"', ln)
             for ln in text.splitlines()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Directive:
    """A blocking playlist reload: answer once segment ``msn`` (or its part ``part``)
    is in the playlist."""

    msn: int
    part: int | None = None

    def needed_end(self) -> int:
        """The newest frame end at which the playlist holds what is asked for."""
        if self.part is None:
            return segment_bounds(self.msn)[1]
        return part_bounds(self.msn, self.part)[1]

    def too_far(self, newest_end_pts: int) -> bool:
        """Beyond what the spec lets a client ask for (then: 400 at once)."""
        if self.msn > segment_of(newest_end_pts) - 1 + ADVANCE_SEGMENTS:
            return True
        last_part = newest_end_pts // PART_SAMPLES - 1
        return self.part is not None and \
            self.msn * PARTS + self.part > last_part + ADVANCE_PARTS


def directive(msn: str | None, part: str | None) -> Directive | None:
    """``_HLS_msn`` / ``_HLS_part`` of a playlist request; BadInput (400) for nonsense:
    not a number, a part without a segment, a part past the last of a segment."""
    if msn is None:
        if part is not None:
            raise BadInput("_HLS_part needs _HLS_msn", slug="bad-hls-directive")
        return None
    n = _number(msn)
    p = _number(part) if part is not None else None
    if n is None or (part is not None and (p is None or p >= PARTS)):
        raise BadInput(f"_HLS_msn must be a segment number and _HLS_part a part of it "
                       f"(0-{PARTS - 1})", slug="bad-hls-directive")
    return Directive(n, p)
