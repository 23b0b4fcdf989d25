"""Fragmented MP4 (CMAF) boxes for Opus and AAC, written by hand, with no I/O (ISO/IEC
14496-12; "Encapsulation of Opus in ISO Base Media File Format" for ``Opus``/``dOps``;
ISO/IEC 14496-14 for ``mp4a``/``esds``).

An init segment (``ftyp`` + ``moov`` with one audio track at 48 kHz) and media segments
(``styp`` + ``moof`` + ``mdat``) holding the very packets given: the Opus packets of the
chunks are never re-encoded. Each 20 ms Opus packet is one sample of 960 ticks (an AAC
frame: 1024); a segment's ``tfdt`` is the 48 kHz time of its first packet, so any node
builds the same bytes for the same packets.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.ogg import PRE_SKIP

TRACK_ID = 1
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    """One box: 32-bit size, four-character type, payload."""
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """An ISO BMFF full box: a box whose body starts with its version and flags."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def dops(channels: int = 1, pre_skip: int = PRE_SKIP) -> bytes:
    """The Opus-specific box: version 0, channels, pre-skip, input rate, gain, family 0."""
    return box(b"dOps", struct.pack(">BBHIhB", 0, channels, pre_skip, SAMPLE_RATE, 0, 0))


# AudioSpecificConfig of AAC-LC (object type 2), 48 kHz (frequency index 3), mono: what
# every node's encoder (townhall.media.aac) produces, so the init segment is a constant.
AAC_LC_CONFIG = bytes([0x11, 0x88])
AAC_FRAME_SAMPLES = 1024


def _audio_entry(kind: bytes, channels: int, specific: bytes) -> bytes:
    return box(kind, b"\0" * 6, struct.pack(">H", 1),  # data_reference_index
               b"\0" * 8, struct.pack(">HHHHI", channels, 16, 0, 0, SAMPLE_RATE << 16),
               specific)


def _opus_entry(channels: int) -> bytes:
    return _audio_entry(b"Opus", channels, dops(channels))


def _descriptor(tag: int, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">BB", tag, len(body)) + body  # every body here is < 128 bytes


def esds(config: bytes = AAC_LC_CONFIG, bitrate: int = 64_000) -> bytes:
    """The MPEG-4 elementary stream descriptor: ES, DecoderConfig (AAC audio), the
    AudioSpecificConfig, SLConfig."""
    decoder = _descriptor(4, struct.pack(">BB", 0x40, 0x15),  # MPEG-4 audio, audio stream
                          (6144).to_bytes(3, "big"), struct.pack(">II", bitrate, bitrate),
                          _descriptor(5, config))
    return full_box(b"esds", 0, 0, _descriptor(3, struct.pack(">HB", 0, 0), decoder,
                                               _descriptor(6, b"\x02")))


def init_segment(channels: int = 1) -> bytes:
    """``ftyp`` + ``moov``: one Opus track, timescale 48 kHz, fragments to follow."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcdashmsix")
    return ftyp + _moov(channels)


def aac_init_segment(config: bytes = AAC_LC_CONFIG, channels: int = 1) -> bytes:
    """``ftyp`` + ``moov``: one AAC-LC track (``mp4a.40.2``), timescale 48 kHz."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcdashmsix")
    return ftyp + _moov(channels, entry=_audio_entry(b"mp4a", channels, esds(config)),
                        frame=AAC_FRAME_SAMPLES)


def mp4_file(packets: Sequence[bytes], channels: int = 1) -> bytes:
    """A whole (unfragmented) MP4 of Opus packets with its index (``moov``) first, so a
    player can seek before the rest arrives: ``ftyp``, ``moov``, one ``mdat``."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6mp41")
    count = len(packets)
    tables = (
        full_box(b"stts", 0, 0, struct.pack(">III", 1, count, FRAME_SAMPLES)),
        full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, count, 1)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, count),
                 b"".join(struct.pack(">I", len(p)) for p in packets)))
    duration = count * FRAME_SAMPLES

    def head(offset: int) -> bytes:
        stco = full_box(b"stco", 0, 0, struct.pack(">II", 1, offset))
        return ftyp + _moov(channels, duration, (*tables, stco), fragmented=False)

    offset = len(head(0)) + 8
    return head(offset) + box(b"mdat", *packets)


def _moov(channels: int, duration: int = 0, tables: tuple[bytes, ...] | None = None,
          fragmented: bool = True, entry: bytes | None = None,
          frame: int = FRAME_SAMPLES) -> bytes:
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, SAMPLE_RATE, duration),
                    struct.pack(">IH", 0x10000, 0x100), b"\0" * 10, _MATRIX, b"\0" * 24,
                    struct.pack(">I", TRACK_ID + 1))
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, TRACK_ID, 0, duration),
                    b"\0" * 8,
                    struct.pack(">HHHH", 0, 0, 0x100, 0), _MATRIX, struct.pack(">II", 0, 0))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, SAMPLE_RATE, duration,
                                               0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"soun"), b"\0" * 12,
                    b"townhall audio\0")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                 full_box(b"url ", 0, 1)))
    if tables is None:  # samples come in fragments
        tables = (full_box(b"stts", 0, 0, struct.pack(">I", 0)),
                  full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
                  full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
                  full_box(b"stco", 0, 0, struct.pack(">I", 0)))
    stbl = box(b"stbl",
               full_box(b"stsd", 0, 0, struct.pack(">I", 1),
                        entry if entry is not None else _opus_entry(channels)), *tables)
    minf = box(b"minf", full_box(b"smhd", 0, 0, struct.pack(">HH", 0, 0)), dinf, stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    if not fragmented:
        return box(b"moov", mvhd, trak)
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1,
                                                            frame, 0, 0)))
    return box(b"moov", mvhd, trak, mvex)


def media_segment(packets: Sequence[bytes], *, sequence: int, decode_time: int,
                  sample_duration: int = FRAME_SAMPLES) -> bytes:
    """``styp`` + ``moof`` + ``mdat`` with ``packets`` (``sample_duration`` ticks each: 20 ms
    of Opus by default) from ``decode_time`` (48 kHz ticks); ``sequence`` is the fragment's
    number (mfhd), 1 and up."""
    styp = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdhmsixcmfs")
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    # default-base-is-moof (0x020000) + default-sample-duration (0x000008)
    tfhd = full_box(b"tfhd", 0, 0x020008, struct.pack(">II", TRACK_ID, sample_duration))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    sizes = b"".join(struct.pack(">I", len(p)) for p in packets)

    def moof(offset: int) -> bytes:
        # data-offset-present (0x1) + sample-size-present (0x200)
        trun = full_box(b"trun", 0, 0x201, struct.pack(">Ii", len(packets), offset), sizes)
        return box(b"moof", mfhd, box(b"traf", tfhd, tfdt, trun))

    size = len(moof(0))
    return styp + moof(size + 8) + box(b"mdat", *packets)
