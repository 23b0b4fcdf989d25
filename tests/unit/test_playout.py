"""Playout: real Opus packets through the jitter buffer and libopus, one frame per tick."""

from __future__ import annotations

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.jitterbuffer import JitterBuffer
from townhall.media.opus import OpusEncoder, OpusPacketDecoder
from townhall.media.playout import Playout


def _packets(n: int, hz: float = 440.0) -> list[bytes]:
    t = np.arange(n * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * hz * t) * 0.3 * 32767).astype(np.int16)
    enc = OpusEncoder()
    return [enc.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(n)]


def _tone_ratio_db(pcm: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    band = np.abs(freqs - hz) < 10
    return float(20 * np.log10(spec[band].max() / (np.median(spec) + 1e-9)))


def test_reordered_packets_with_a_loss_play_one_frame_per_tick_with_the_tone_intact() -> None:
    pkts = _packets(100)
    order = list(range(100))
    for i in range(0, 98, 7):  # swap neighbours: reordering within the buffer's depth
        order[i], order[i + 1] = order[i + 1], order[i]
    order.remove(50)  # one packet never arrives
    po = Playout()
    frames = []
    for k, i in enumerate(order):
        po.push(i, pkts[i], now=k * 0.020)
        frame = po.pull()
        if frame is not None:
            frames.append(frame)
    while po.jitter._packets:
        frame = po.pull()
        assert frame is not None
        frames.append(frame)
    assert all(f.size == FRAME_SAMPLES for f in frames)
    assert len(frames) == 100  # 99 packets + 1 rebuilt or concealed frame
    assert po.jitter.lost == 1 and po.recovered + po.concealed == 1
    assert _tone_ratio_db(np.concatenate(frames)[4800:], 440) > 30


def test_plc_keeps_the_tone_going_across_a_lost_frame() -> None:
    pkts = _packets(20)
    dec = OpusPacketDecoder()
    for p in pkts[:10]:
        dec.decode(p)
    concealed = dec.conceal()
    assert concealed.size == FRAME_SAMPLES
    assert np.sqrt(np.mean(concealed.astype(np.float64) ** 2)) > 1000  # not silence


def test_garbage_payload_is_counted_and_concealed_not_raised() -> None:
    po = Playout()
    po.push(1, _packets(1)[0], now=0.0)
    po.push(2, b"\xff\xff\xff", now=0.02)
    po.push(3, b"", now=0.04)  # empty payloads (RTP padding) are ignored
    frames = [po.pull(), po.pull(), po.pull()]
    assert all(f is not None for f in frames)  # the third: the empty buffer bridged
    assert po.corrupt == 1 and po.packets == 2 and po.concealed == 2


def test_a_40_ms_packet_fills_two_ticks() -> None:
    t = np.arange(2 * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * 440 * t) * 0.3 * 32767).astype(np.int16)
    import av  # a 40 ms Opus packet straight from libopus through PyAV

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = SAMPLE_RATE, "mono", "s16"
    ctx.bit_rate = 32000
    ctx.options = {"frame_duration": "40"}
    ctx.open()
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, 0
    packet = b"".join(bytes(p) for p in ctx.encode(frame))
    po = Playout(jitter=JitterBuffer(min_frames=1, target=1))
    po.push(7, packet, now=0.0)
    a, b = po.pull(), po.pull()
    assert a is not None and b is not None and not po.jitter._packets
    assert a.size == b.size == FRAME_SAMPLES and po.concealed == 0


def _voice(seconds: float) -> np.ndarray:
    """A speech-like signal: glottal harmonics of a gliding 120 Hz pitch shaped by three
    moving formants, four syllables a second (Opus codes it in SILK/hybrid mode)."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    shift = 0.8 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.9 * t))
    out = np.zeros_like(t)
    for k in range(1, 32):
        env = sum(np.exp(-(((k * f0) - f * shift) / bw) ** 2 / 2)
                  for f, bw in ((700, 130), (1200, 70), (2600, 160))) + 0.02
        out += env * np.sin(k * phase) / np.sqrt(k)
    out *= np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 0.5
    return (out / np.abs(out).max() * 0.3 * 32767).astype(np.int16)


def test_fec_rebuilds_lost_voice_frames_far_better_than_plc() -> None:
    import av

    from townhall.cli.speak import SpeakerEncoder

    pcm = _voice(3.0)
    enc = SpeakerEncoder(expected_loss=10)
    pkts: list[bytes] = []
    for i in range(0, pcm.size, FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(pcm[i:i + FRAME_SAMPLES].reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        pkts += [bytes(p) for p in enc.encode(frame)]
    clean_dec = OpusPacketDecoder()
    clean = [clean_dec.decode(p) for p in pkts]
    lost = set(range(20, len(pkts) - 2, 9))  # isolated losses: the next packet arrives

    po = Playout(jitter=JitterBuffer(min_frames=2))
    with_fec: list[np.ndarray] = []
    for i, p in enumerate(pkts):
        if i not in lost:
            po.push(i, p, now=i * 0.020)
        played = po.pull()
        if played is not None:
            with_fec.append(played)
    assert po.recovered == len(lost) and po.concealed == 0
    assert np.array_equal(with_fec[5], clean[5])  # one frame per packet, aligned
    plc_dec = OpusPacketDecoder()
    plc = [plc_dec.conceal() if i in lost else plc_dec.decode(p) for i, p in enumerate(pkts)]

    def snr_db(frames: list[np.ndarray]) -> float:
        """Lost frames against the lossless decode, over the syllables."""
        err = sig = 0.0
        for i in lost:
            ref = clean[i].astype(np.float64)
            if np.sqrt(np.mean(ref ** 2)) < 500:
                continue  # between syllables
            err += float(((frames[i].astype(np.float64) - ref) ** 2).sum())
            sig += float((ref ** 2).sum())
        return float(10 * np.log10(sig / err))

    fec_db, plc_db = snr_db(with_fec), snr_db(plc)
    assert fec_db > plc_db + 6, (fec_db, plc_db)


def _long_packets(ms: int, seconds: float, bitrate: int = 12_000) -> list[bytes]:
    """A voice-like signal as libopus codes it in ``ms`` packets (a speaker's lowest step)."""
    import fractions

    import av

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = SAMPLE_RATE, "mono", "s16"
    ctx.bit_rate = bitrate
    ctx.options = {"frame_duration": str(ms), "application": "voip"}
    ctx.open()
    pcm = (_voice(seconds) * 0.3 * 32767).astype(np.int16)
    out: list[bytes] = []
    for i in range(pcm.size // FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
                                           .reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, i * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


def _play(sent: list[tuple[bytes, float]], ticks: int) -> tuple[Playout, list[np.ndarray | None]]:
    """``sent``: (packet, arrival s) in RTP order (sequence numbers 65530 on: they wrap);
    one pull per 20 ms tick, packets pushed as their arrival comes."""
    po, out, k = Playout(), [], 0
    for tick in range(ticks):
        now = tick * 0.020
        while k < len(sent) and sent[k][1] <= now:
            if sent[k][0]:
                po.push((65530 + k) & 0xFFFF, sent[k][0], now)
            k += 1
        out.append(po.pull())
    return po, out


def test_60_ms_packets_play_one_frame_per_tick_with_no_gap() -> None:
    pkts = _long_packets(60, 4.0)
    assert len(pkts) >= 60 and all(len(p) < 120 for p in pkts)
    po, out = _play([(p, 0.06 * (i + 1) + 0.005) for i, p in enumerate(pkts)], 200)
    first = next(i for i, f in enumerate(out) if f is not None)
    played = out[first:first + 3 * len(pkts) - 6]
    assert all(f is not None and f.size == FRAME_SAMPLES for f in played)
    assert (po.concealed, po.jitter.lost, po.jitter.skipped, po.jitter.underruns) == (0, 0, 0, 0)
    assert first * 0.020 <= 0.06 * 2 + 0.08   # two packets in hand, not a flood of slots


def test_a_lost_60_ms_packet_is_concealed_for_its_whole_length() -> None:
    pkts = _long_packets(60, 3.0)
    sent = [(b"" if i == 20 else p, 0.06 * (i + 1)) for i, p in enumerate(pkts)]
    po, out = _play(sent, 3 * len(pkts))      # to the last packet (then it would bridge)
    first = next(i for i, f in enumerate(out) if f is not None)
    assert all(f is not None for f in out[first:])
    assert po.concealed + po.recovered == 3 and po.jitter.lost == 3
    assert po.jitter.skipped == 0


def test_a_switch_from_20_to_60_ms_packets_keeps_the_timeline() -> None:
    short, long_ = _long_packets(20, 2.0), _long_packets(60, 2.0)
    sent = [(p, 0.02 * (i + 1)) for i, p in enumerate(short[:50])]
    sent += [(p, 1.0 + 0.06 * (i + 1)) for i, p in enumerate(long_[:30])]
    po, out = _play(sent, 140)
    first = next(i for i, f in enumerate(out) if f is not None)
    assert all(f is not None for f in out[first:])
    # The first 60 ms packet leaves 40 ms later than a 20 ms one would: at most one frame
    # bridged (then played from it: stretched), nothing counted lost or skipped.
    assert po.concealed <= 1 and po.jitter.stretched == po.concealed
    assert (po.jitter.lost, po.jitter.skipped) == (0, 0)


def test_a_sender_clock_faster_than_ours_skips_whole_60_ms_packets() -> None:
    pkts = _long_packets(60, 6.0)
    sent = [(p, 0.057 * (i + 1)) for i, p in enumerate(pkts)]   # 5 % fast
    po, out = _play(sent, int(0.057 * len(pkts) / 0.020))
    first = next(i for i, f in enumerate(out) if f is not None)
    assert all(f is not None for f in out[first:])
    assert po.jitter.skipped >= 1
    assert (po.concealed, po.jitter.lost) == (0, 0)   # a skip is never a half packet
