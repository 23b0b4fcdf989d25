"""HLS playlists and the segment plan of a Space, with no I/O.

Segment ``k`` holds the packets whose 48 kHz time (the chunks' ``pts``, 0 at the Space's
start) falls in ``[k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES)``: every node computes
the same segments from the same chunks, so a CDN may pull any of them from any node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.recording import timeline

SEGMENT_SAMPLES = 2 * SAMPLE_RATE   # 2 s segments
LIVE_WINDOW = 6                     # segments listed in a live playlist


def segment_of(pts: int) -> int:
    return pts // SEGMENT_SAMPLES


def segment_packets(chunks: Iterable[Chunk], k: int) -> list[bytes]:
    """The packets of segment ``k`` (holes inside filled with silence)."""
    lo, hi = k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES
    return [p for pts, p in timeline(chunks) if lo <= pts < hi]


@dataclass(frozen=True)
class Playlist:
    """A media playlist: segments ``first .. last`` (inclusive); ``ended`` adds ENDLIST."""

    first: int
    last: int
    ended: bool
    last_samples: int = SEGMENT_SAMPLES  # the final segment may be shorter

    def render(self, prefix: str = "") -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:7",
                 f"#EXT-X-TARGETDURATION:{SEGMENT_SAMPLES // SAMPLE_RATE}",
                 f"#EXT-X-MEDIA-SEQUENCE:{self.first}"]
        if self.ended:
            lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
        lines.append(f'#EXT-X-MAP:URI="{prefix}init.mp4"')
        for k, seconds in self._durations():
            lines += [f"#EXTINF:{seconds:.3f},", f"{prefix}{k}.m4s"]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _durations(self) -> Iterator[tuple[int, float]]:
        for k in range(self.first, self.last + 1):
            samples = self.last_samples if k == self.last and self.ended else SEGMENT_SAMPLES
            yield k, samples / SAMPLE_RATE


def live_playlist(newest_end_pts: int, oldest_pts: int) -> Playlist | None:
    """The live window: complete segments only (the one being filled is left out), never
    older than what is still held from ``oldest_pts``."""
    complete = segment_of(newest_end_pts) - 1
    if complete < 0:
        return None
    held_from = -(-oldest_pts // SEGMENT_SAMPLES)  # the first segment held whole
    first = max(complete - LIVE_WINDOW + 1, held_from)
    if first > complete:
        return None
    return Playlist(first=first, last=complete, ended=False)


def vod_playlist(first_pts: int, end_pts: int) -> Playlist | None:
    """Every segment of a finished recording."""
    if end_pts <= first_pts:
        return None
    first, last = segment_of(first_pts), segment_of(end_pts - 1)
    tail = end_pts - last * SEGMENT_SAMPLES
    return Playlist(first=first, last=last, ended=True,
                    last_samples=-(-tail // FRAME_SAMPLES) * FRAME_SAMPLES)
