"""Ogg/Opus pages (RFC 3533, RFC 7845) for the Icecast-style listener stream (Sans-I/O).

Every listener of an edge gets the same two header pages, then the same page per chunk;
pages carry the chunk's sequence number as page number, so a listener who joins late sees
a page-number jump that decoders treat as a normal live start.
"""

from __future__ import annotations

import struct
import zlib

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk

PRE_SKIP = 312
VENDOR = b"townhall"
_PAGE_HEAD = struct.Struct("<4sBBqIIIB")
FLAG_BOS = 0x02
FLAG_EOS = 0x04
FIRST_MEDIA_PAGE = 2  # pages 0 and 1 are the headers


# Ogg's CRC-32 is the non-reflected form of zlib's polynomial (0x04C11DB7, initial 0, no
# final xor). zlib computes the reflected form in C: feed it every byte bit-reversed, undo
# its initial and final inversion, and bit-reverse the result: it runs once per chunk per
# Space on every edge, where a table-driven Python loop was too slow (docs/edge.md, "What
# it bought").
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, initial 0, not reflected, no final xor."""
    reflected = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _lacing(packet: bytes) -> bytes:
    full, rest = divmod(len(packet), 255)
    return bytes([255] * full + [rest])


def page(packets: list[bytes] | tuple[bytes, ...], *, serial: int, page_no: int,
         granule: int, flags: int = 0) -> bytes:
    """One Ogg page holding whole packets (at most 255 lacing values)."""
    lacing = b"".join(_lacing(p) for p in packets)
    if len(lacing) > 255:
        raise ValueError("packets do not fit in one Ogg page")
    head = _PAGE_HEAD.pack(b"OggS", 0, flags, granule, serial, page_no, 0, len(lacing))
    raw = head + lacing + b"".join(packets)
    crc = ogg_crc(raw)
    return raw[:22] + struct.pack("<I", crc) + raw[26:]


def opus_head(channels: int = 1, pre_skip: int = PRE_SKIP) -> bytes:
    """The OpusHead identification packet (mapping family 0)."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, SAMPLE_RATE, 0, 0)


def opus_tags(vendor: bytes = VENDOR) -> bytes:
    """The OpusTags comment packet with no user comments."""
    return b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)


class OggOpusStream:
    """Turns chunks into Ogg pages of one logical stream (serial) shared by all listeners."""

    def __init__(self, serial: int = 0x7448_0001, channels: int = 1) -> None:
        self.serial = serial
        self.headers = (page([opus_head(channels)], serial=serial, page_no=0, granule=0,
                             flags=FLAG_BOS)
                        + page([opus_tags()], serial=serial, page_no=1, granule=0))

    def chunk_page(self, chunk: Chunk) -> bytes:
        """The page for one chunk: granule = samples up to its end (plus pre-skip)."""
        end = chunk.pts + FRAME_SAMPLES * len(chunk.packets) + PRE_SKIP
        return page(chunk.packets, serial=self.serial,
                    page_no=(FIRST_MEDIA_PAGE + chunk.seq) & 0xFFFFFFFF, granule=end)
