"""Stage media cores: Opus round trip, frame buffer, mixer (mix-minus, mutes, limiter),
packager. Pure and deterministic: no I/O, no clocks."""

from __future__ import annotations

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.mixer import FULL_SCALE, level, limit, mix
from townhall.media.opus import OpusDecoder, OpusEncoder
from townhall.media.packager import Packager


def sine(hz: float, frames: int, amplitude: float = 0.3, start: int = 0) -> np.ndarray:
    t = (np.arange(frames * FRAME_SAMPLES) + start) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * FULL_SCALE).astype(np.int16)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


def band_db(pcm: np.ndarray, hz: float) -> float:
    """Energy near ``hz`` in dB (relative, for comparisons within one test)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size))) ** 2
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    return float(10 * np.log10(spectrum[np.abs(freqs - hz) < 15].sum() + 1e-9))


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i:i + FRAME_SAMPLES] for i in range(0, pcm.size, FRAME_SAMPLES)]


# --- Opus -------------------------------------------------------------------------------

def test_opus_round_trip_keeps_the_tone() -> None:
    enc, dec = OpusEncoder(bitrate=32_000), OpusDecoder()
    out = []
    for frame in frames_of(sine(440, 50)):
        packet = enc.encode(frame)
        assert 0 < len(packet) < 400  # ~80 bytes at 32 kbps
        pcm = dec.decode(packet)
        assert pcm.dtype == np.int16 and pcm.size == FRAME_SAMPLES
        out.append(pcm)
    decoded = np.concatenate(out)[FRAME_SAMPLES * 5:]
    assert abs(peak_hz(decoded) - 440) < 10
    assert level(decoded) > 0.5


def test_opus_silence_is_small_and_quiet() -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    packets = [enc.encode(np.zeros(FRAME_SAMPLES, np.int16)) for _ in range(10)]
    assert all(len(p) < 20 for p in packets[2:])
    assert max(int(np.abs(dec.decode(p)).max()) for p in packets) < 50


# --- Mixer -------------------------------------------------------------------------------

def test_mix_minus_is_exact_own_voice_absent_from_own_return() -> None:
    a, b, c = sine(440, 1, 0.1), sine(660, 1, 0.1), sine(880, 1, 0.1)
    out = mix({"a": a, "b": b, "c": c}, muted=set())
    wide = a.astype(np.int32) + b + c
    assert np.array_equal(out.program, wide.astype(np.int16))  # below the knee: exact
    assert np.array_equal(out.returns["a"], (b.astype(np.int32) + c).astype(np.int16))
    assert np.array_equal(out.returns["b"], (a.astype(np.int32) + c).astype(np.int16))
    assert np.array_equal(out.returns["c"], (a.astype(np.int32) + b).astype(np.int16))


def test_mix_minus_over_many_frames_suppresses_own_tone_by_40_db() -> None:
    a, b = sine(440, 50), sine(660, 50)
    ra, rb = [], []
    for fa, fb in zip(frames_of(a), frames_of(b), strict=True):
        out = mix({"a": fa, "b": fb}, muted=set())
        ra.append(out.returns["a"])
        rb.append(out.returns["b"])
    ret_a, ret_b = np.concatenate(ra), np.concatenate(rb)
    assert band_db(ret_a, 660) - band_db(ret_a, 440) > 40
    assert band_db(ret_b, 440) - band_db(ret_b, 660) > 40


def test_muted_speaker_is_silent_in_program_and_returns_at_once() -> None:
    a, b = sine(440, 1, 0.1), sine(660, 1, 0.1)
    out = mix({"a": a, "b": b}, muted={"b"})
    assert np.array_equal(out.program, a)
    assert np.array_equal(out.returns["a"], np.zeros(FRAME_SAMPLES, np.int16))
    assert np.array_equal(out.returns["b"], a)  # muted speakers still hear the room


def test_nobody_speaking_is_digital_silence() -> None:
    out = mix({"a": None, "b": None}, muted=set())
    assert not out.program.any() and not out.returns["a"].any()
    assert mix({}, muted=set()).program.size == FRAME_SAMPLES


def test_limiter_is_linear_below_the_knee_and_never_clips() -> None:
    quiet = np.linspace(-20000, 20000, 1001)
    assert np.array_equal(limit(quiet), np.round(quiet).astype(np.int16))
    loud = np.linspace(-13 * 32767, 13 * 32767, 10001)  # 13 speakers at full scale
    out = limit(loud).astype(np.int32)
    assert out.max() <= 32767 and out.min() >= -32768
    assert np.all(np.diff(out) >= 0)  # monotonic: no wrap-around, no folding
    # Soft: 13 full-scale sines summed stay below full scale, rather than flat-topping.
    many = mix({str(i): sine(440 + 20 * i, 1, 1.0) for i in range(13)}, muted=set())
    assert int(np.abs(many.program.astype(np.int32)).max()) <= 32767


def test_level_scale() -> None:
    assert level(np.zeros(FRAME_SAMPLES, np.int16)) == 0.0
    assert level(sine(440, 1, 1.0)) > 0.9
    assert 0.0 < level(sine(440, 1, 0.01)) < level(sine(440, 1, 0.1))


# --- Packager ----------------------------------------------------------------------------

def test_packager_makes_chunks_of_five_with_strictly_increasing_seq_and_pts() -> None:
    pack = Packager()
    chunks = [c for i in range(52) if (c := pack.add(bytes([i]), now_us=i)) is not None]
    assert [c.seq for c in chunks] == list(range(10))
    assert [c.pts for c in chunks] == [i * 5 * FRAME_SAMPLES for i in range(10)]
    assert chunks[1].packets == tuple(bytes([i]) for i in range(5, 10))
    assert all(Chunk.decode(c.encode()) == c for c in chunks)


def test_packager_continues_after_a_previous_owner() -> None:
    last = Chunk(seq=41, pts=41 * 4800, sent_us=0, packets=(b"x",) * 5)
    pack = Packager.after(last, frames_per_chunk=2)
    chunk = None
    while chunk is None:
        chunk = pack.add(b"y", now_us=1)
    assert (chunk.seq, chunk.pts, len(chunk.packets)) == (42, 42 * 4800, 2)
    assert Packager.after(None).next_seq == 0
