"""The silence fast path: which packets carry no audio, the gate's plan per tick, and a
Space stepped through silence and speech in turn (real Opus in and out, no I/O)."""

from __future__ import annotations

import fractions
from typing import Any, cast

import av
import numpy as np

from tests.fakebus import FakeBus
from tests.snapshots import space
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE, Chunk
from townhall.media.levels import audible, level
from townhall.media.linkquality import LinkReport
from townhall.media.opus import OpusEncoder, OpusPacketDecoder, frame_samples, silent_packet
from townhall.media.packager import Packager
from townhall.media.playout import Playout
from townhall.media.silence import SILENT_FRAME, Plan, SilenceGate
from townhall.stage.role import SpaceRun


def tone(frames: int, hz: float = 440.0, amplitude: float = 0.3, start: int = 0) -> np.ndarray:
    t = (np.arange(frames * FRAME_SAMPLES) + start) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


class VoipEncoder:
    """A speaker's uplink encoder as `townhall speak` configures it (VOIP, in-band FEC)."""

    def __init__(self, fec: bool = True) -> None:
        self._ctx: Any = cast(Any, av.CodecContext.create("libopus", "w"))
        self._ctx.sample_rate, self._ctx.layout, self._ctx.format = SAMPLE_RATE, "mono", "s16"
        self._ctx.bit_rate = 32_000
        self._ctx.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._ctx.options = {"application": "voip", **({"fec": "1", "packet_loss": "10"}
                                                        if fec else {})}
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, self._pts
        self._pts += FRAME_SAMPLES
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


# --- Which packets carry no audio --------------------------------------------------------

def test_toc_only_and_celt_silence_packets_are_silent_and_audio_is_not() -> None:
    enc = OpusEncoder()
    quiet = [enc.encode(np.zeros(FRAME_SAMPLES, np.int16)) for _ in range(20)]
    assert all(silent_packet(p) for p in quiet[5:]), [len(p) for p in quiet]
    dec = OpusPacketDecoder()
    assert all(not dec.decode(p).any() for p in quiet[5:])  # they do decode to zeros
    speech = [enc.encode(f) for f in tone(20).reshape(20, FRAME_SAMPLES)]
    assert not any(silent_packet(p) for p in speech)
    assert silent_packet(b"\xf8") and silent_packet(b"\x08\x00")  # TOC only; 1-byte frame
    assert not silent_packet(b"\xfb\x03" + b"\x00" * 8)  # several frames (code 3): decode
    assert (frame_samples(0xF8), frame_samples(0x10), frame_samples(0x60)) == (960, 1920, 480)


def test_voip_uplink_silence_is_inaudible_however_it_is_packed() -> None:
    """Whatever the speaker's encoder sends for digital silence, decoded or not, the gate
    does not hear it: a muted browser microphone keeps the program gated."""
    for fec in (True, False):
        enc, po = VoipEncoder(fec), Playout()
        pcm = np.concatenate([tone(10), np.zeros(50 * FRAME_SAMPLES, np.int16)])
        frames = []
        for i, f in enumerate(pcm.reshape(-1, FRAME_SAMPLES)):
            po.push(i, enc.encode(f), now=i * 0.020)
            frames.append(po.pull())
        assert audible(frames[5])
        assert not any(audible(f) for f in frames[20:])
        # With FEC on, libopus codes silence as SILK frames that are decoded (±1); without,
        # as 3-byte CELT silence that is not decoded at all.
        assert (po.silent > 30) is not fec


def test_playout_skips_silent_packets_and_starts_speech_from_a_fresh_decoder() -> None:
    enc = OpusEncoder()
    speech = tone(30)
    pcm = np.concatenate([tone(10, 660), np.zeros(60 * FRAME_SAMPLES, np.int16), speech])
    packets = [enc.encode(f) for f in pcm.reshape(-1, FRAME_SAMPLES)]
    po = Playout()
    frames = []
    for i, p in enumerate(packets):
        po.push(i, p, now=i * 0.020)
        frames.append(po.pull())
    assert po.silent >= 30  # the settled silence was not decoded
    assert all(f is None for f in frames[30:65])
    # The onset decodes as it would with a decoder that saw every packet.
    reference = OpusPacketDecoder()
    full = [reference.decode(p) for p in packets]
    got = np.concatenate([f for f in frames[65:] if f is not None])
    want = np.concatenate(full[70:70 + got.size // FRAME_SAMPLES])
    err = got.astype(np.float64) - want
    assert 10 * np.log10(np.sum(want.astype(np.float64) ** 2) / (np.sum(err ** 2) + 1)) > 30


# --- The gate ----------------------------------------------------------------------------

def test_gate_starts_silent_settles_on_a_packet_and_mixes_at_the_first_audible_frame() -> None:
    gate = SilenceGate(hangover=5, steady=3)
    assert gate.plan(False) is Plan.SILENCE  # a new Space: nobody has spoken
    for packet in (b"a", b"b", b"b"):
        gate.encoded(packet)
        assert gate.plan(False) is Plan.SILENCE
    gate.encoded(b"b")  # the third "b" in a row: settled
    assert gate.packet == b"b"
    assert [gate.plan(False) for _ in range(3)] == [Plan.REPEAT] * 3
    assert gate.plan(True) is Plan.MIX and gate.packet is None
    # The hangover: four quiet frames still mix, the fifth is gated.
    assert [gate.plan(False) for _ in range(5)] == [Plan.MIX] * 4 + [Plan.SILENCE]
    assert gate.plan(True) is Plan.MIX  # heard again: at once
    assert (gate.mixed, gate.repeated) == (6, 3)


# --- A Space stepped through silence and speech -------------------------------------------

class Returns:
    def __init__(self) -> None:
        self.fed: list[np.ndarray] = []

    def feed(self, pcm: np.ndarray) -> None:
        self.fed.append(pcm)


class Speaker:
    """A session as SpaceRun sees it: one uplink packet arrives per tick."""

    def __init__(self, identity: str, packets: list[bytes]) -> None:
        self.identity = identity
        self.playout = Playout()
        self.returns = Returns()
        self._packets = packets
        self.n = 0
        self.heard: list[int] = []  # ticks whose pulled frame was audible

    def pull(self) -> np.ndarray | None:
        if self.n < len(self._packets):
            self.playout.push(self.n, self._packets[self.n], now=self.n * 0.020)
        frame = self.playout.pull()
        if audible(frame):
            self.heard.append(self.n)
        self.n += 1
        return frame

    def link(self, now: float) -> LinkReport:
        return {"quality": "good", "loss_pct": 0.0, "jitter_ms": 0.0}


def program(gated: bool, uplink: list[bytes]) -> tuple[list[Chunk], SpaceRun, Speaker, int]:
    """Step a Space with one speaker through ``uplink``: its chunks, the run, the speaker,
    and how many ticks called the program encoder."""
    run = SpaceRun(cast(Any, FakeBus()), "sp1", space(stage=[{"id": "ada", "name": "Ada"}]),
                   Packager(next_seq=7, next_pts=7 * 4800))
    if not gated:
        run.gate = SilenceGate(hangover=10**9, quiet=0)
    speaker = Speaker("ada", uplink)
    run.sessions["s1"] = cast(Any, speaker)
    encode, calls = run.encoder.encode, [0]

    def counted(pcm: np.ndarray) -> bytes:
        calls[0] += 1
        return encode(pcm)

    run.encoder.encode = counted  # type: ignore[method-assign]
    chunks = []
    for tick in range(len(uplink) + 10):
        for subject, data in run.step(now=tick * 0.020, wall=1000 + tick * 0.020):
            if subject.endswith(".media"):
                chunks.append(Chunk.decode(data))
    return chunks, run, speaker, calls[0]


def decode(chunks: list[Chunk]) -> list[np.ndarray]:
    dec = OpusPacketDecoder()
    return [dec.decode(p) for c in chunks for p in c.packets]


def test_silence_and_speech_alternating_keep_the_stream_continuous_and_cheap() -> None:
    up = VoipEncoder()
    silence = np.zeros(150 * FRAME_SAMPLES, np.int16)  # 3 s
    pcm = np.concatenate([silence, tone(50), silence, tone(50, 660), silence[:50 * 960]])
    uplink = [up.encode(f) for f in pcm.reshape(-1, FRAME_SAMPLES)]
    chunks, run, speaker, encodes = program(True, uplink)

    # Sequence numbers and pts never jump, silence or speech.
    assert [c.seq for c in chunks] == list(range(7, 7 + len(chunks)))
    assert [c.pts for c in chunks] == [(7 + i) * 4800 for i in range(len(chunks))]
    assert all(len(c.packets) == 5 for c in chunks)

    # Silence cost no encoder: most silent ticks only repeated the settled packet.
    ticks = len(chunks) * 5
    assert run.gate.repeated > 0.6 * ticks and encodes < 0.4 * ticks
    assert run.counts().silent_ticks == run.gate.repeated

    # Each tone is heard from the frame of its first audible uplink frame: that tick's
    # program packet carries it (after the encoder's 312-sample lookahead).
    frames = decode(chunks)
    onsets = [t for i, t in enumerate(speaker.heard) if i == 0 or t - speaker.heard[i - 1] > 1]
    assert len(onsets) == 2
    for t in onsets:
        assert level(frames[t][640:]) > 0.5, t
        assert level(frames[t - 1]) == 0.0
        assert not audible(frames[t - 3])

    # Nothing listeners hear changes: frame by frame, the gated program is as loud as the
    # ungated one (two encodings of the same audio differ by coding noise, never by a
    # click: a click would be a loud frame where the ungated program is quiet).
    ref_chunks, _, _, ref_encodes = program(False, uplink)
    assert ref_encodes == ticks
    want = decode(ref_chunks)
    assert max(abs(level(g) - level(w)) for g, w in zip(frames, want, strict=True)) < 0.02
    def peak(f: np.ndarray) -> int:
        return int(np.abs(f.astype(np.int32)).max())

    quiet = [(peak(g), peak(w)) for g, w in zip(frames, want, strict=True) if level(w) == 0.0]
    assert len(quiet) > 300 and all(g <= w + 30 for g, w in quiet), quiet
    got_e = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in frames)
    want_e = sum(float(np.sum(w.astype(np.float64) ** 2)) for w in want)
    assert abs(10 * np.log10(got_e / want_e)) < 0.1


def test_a_muted_speaker_keeps_the_space_gated_and_still_gets_its_return_feed() -> None:
    up = VoipEncoder()
    uplink = [up.encode(f) for f in tone(100).reshape(-1, FRAME_SAMPLES)]
    muted = space(stage=[{"id": "ada", "name": "Ada", "muted": True}])
    run = SpaceRun(cast(Any, FakeBus()), "sp1", muted, Packager())
    speaker = Speaker("ada", uplink)
    run.sessions["s1"] = cast(Any, speaker)
    for tick in range(100):
        run.step(now=tick * 0.020, wall=tick * 0.020)
    assert speaker.heard  # it talks...
    assert run.gate.mixed == 0 and run.gate.repeated > 80  # ...and nobody mixes it
    assert len(speaker.returns.fed) == 100
    assert all(f is SILENT_FRAME for f in speaker.returns.fed)
