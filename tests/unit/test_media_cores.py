"""Mixer, frame buffer, packager and Opus round trip: deterministic, no I/O."""

from __future__ import annotations

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, Chunk
from townhall.media.mixer import level, limit, mix
from townhall.media.opus import OpusDecoder, OpusEncoder
from townhall.media.packager import Packager


def sine(hz: float, amp: float = 8000.0, n: int = FRAME_SAMPLES, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / 48_000
    return (np.sin(2 * np.pi * hz * t) * amp).astype(np.int16)


def test_mix_minus_leaves_out_exactly_the_speakers_own_signal() -> None:
    a, b, c = sine(440), sine(660), sine(880)
    m = mix({"a": a, "b": b, "c": c}, muted=set())
    assert np.array_equal(m.returns["a"], (b.astype(int) + c).astype(np.int16))
    assert np.array_equal(m.returns["b"], (a.astype(int) + c).astype(np.int16))
    assert np.array_equal(m.program, (a.astype(int) + b + c).astype(np.int16))


def test_muted_speakers_are_silent_in_every_feed_but_still_hear() -> None:
    a, b = sine(440), sine(660)
    m = mix({"a": a, "b": b}, muted={"b"})
    assert np.array_equal(m.program, a)
    assert np.array_equal(m.returns["b"], a)  # muted, not deafened
    assert not np.any(m.returns["a"])


def test_quiet_speakers_and_nobody_mix_to_silence() -> None:
    m = mix({"a": None}, muted=set())
    assert m.program.size == FRAME_SAMPLES and not np.any(m.program)
    assert not np.any(mix({}, muted=set()).program)


def test_limiter_never_clips_and_leaves_quiet_audio_alone() -> None:
    loud = np.full(FRAME_SAMPLES, 13 * 30000.0)
    out = limit(loud)
    assert out.max() <= 32767 and out.max() > 30000
    quiet = sine(440, amp=5000).astype(np.float64)
    assert np.array_equal(limit(quiet), quiet.astype(np.int16))
    ramp = limit(np.linspace(-60000, 60000, FRAME_SAMPLES))
    assert np.all(np.diff(ramp.astype(int)) >= 0)  # monotonic: no fold-over distortion


def test_thirteen_loud_speakers_stay_within_full_scale() -> None:
    frames: dict[str, np.ndarray | None] = {f"s{i}": sine(200 + 50 * i, amp=20000)
                                            for i in range(13)}
    m = mix(frames, muted=set())
    for pcm in [m.program, *m.returns.values()]:
        assert pcm.dtype == np.int16 and np.abs(pcm.astype(int)).max() <= 32767


def test_level_scale() -> None:
    assert level(np.zeros(960, np.int16)) == 0.0
    assert 0.8 < level(sine(440, amp=20000)) <= 1.0
    assert level(sine(440, amp=300)) < level(sine(440, amp=3000))


def test_packager_numbers_chunks_and_continues_after_takeover() -> None:
    p = Packager(frames_per_chunk=5)
    chunks = [c for i in range(25) if (c := p.add(bytes([i]), now_us=i)) is not None]
    assert [c.seq for c in chunks] == [0, 1, 2, 3, 4]
    assert [c.pts for c in chunks] == [0, 4800, 9600, 14400, 19200]
    assert chunks[1].packets == tuple(bytes([i]) for i in range(5, 10))
    again = Packager.after(Chunk.decode(chunks[-1].encode()))
    assert (again.next_seq, again.next_pts) == (5, 24000)
    assert Packager.after(None).next_seq == 0


def test_opus_round_trip_keeps_the_tone() -> None:
    enc, dec = OpusEncoder(32_000), OpusDecoder()
    pcm = np.concatenate([dec.decode(enc.encode(sine(440, start=i * 960)))
                          for i in range(50)])
    spectrum = np.abs(np.fft.rfft(pcm[4800:].astype(float)))
    freqs = np.fft.rfftfreq(pcm[4800:].size, 1 / 48_000)
    assert abs(freqs[spectrum.argmax()] - 440) < 5
