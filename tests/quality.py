"""What a listener hears from a speaker on a bad network, scored with PESQ-WB and STOI.

Shared by tests/netns/test_quality_harness.py (one short condition) and bench/quality:

- ``make_speech``: test speech the project generates (Debian's ``espeak-ng``, several
  voices and rates), 48 kHz mono int16: the file ``townhall speak --file`` loops.
- ``run_condition``: a lab (tests/netlab.py) with a stage host reachable for media only
  through the impairment relay (tests/impair.py) on a "NAT" host, and a speaker host;
  ``townhall speak --file`` on the speaker, ``townhall listen --out`` next to the stage,
  the stage's own counters read from the api's /metrics before the speaker leaves.
- ``score_recording``: windows of the recording aligned to the looping reference by
  (circular) cross-correlation, PESQ-WB and STOI at 16 kHz per window.
- ``opus_alone``: the same speech through Opus only (the speaker's encoder, the same loss
  process as the relay's, libopus FEC/PLC), and again through the program's encoder
  (the tandem a listener gets): the reference figures, computed in the same run.

Everything it starts (namespaces, nft rules, relay, servers, clients) ends with the lab.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.impair import Channel, Impairment
from tests.netlab import Host, Lab, live_space
from townhall.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]
RATE = 48_000
SCORE_RATE = 16_000          # PESQ-WB and STOI both work at 16 kHz
RTC_PORTS = "40000-40009"

SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
)
VOICES = (("en-us+m3", 160), ("en+f3", 145), ("en-gb+m1", 175), ("en+f4", 150))


def why_no_speech() -> str | None:
    return None if shutil.which("espeak-ng") else "espeak-ng is not installed"


def _espeak(text: str, voice: str, rate: int, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(out), text],
                   check=True, capture_output=True, timeout=30)
    with wave.open(str(out), "rb") as w:
        sr, data = w.getframerate(), w.readframes(w.getnframes())
    pcm = np.frombuffer(data, np.int16).astype(np.float64)
    return resample(pcm, sr, RATE)


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(src, dst)
    return np.asarray(resample_poly(pcm, dst // g, src // g), np.float64)


def make_speech(path: Path, seconds: float = 8.0) -> np.ndarray:
    """At least ``seconds`` of espeak-ng speech, voices and rates taking turns, written
    to ``path`` (48 kHz mono int16 WAV); returns the samples."""
    parts: list[np.ndarray] = []
    total, i = 0, 0
    while total < seconds * RATE:
        voice, rate = VOICES[i % len(VOICES)]
        part = _espeak(SENTENCES[i % len(SENTENCES)], voice, rate, path.with_suffix(".tmp.wav"))
        part = np.concatenate([part, np.zeros(RATE // 5)])  # 200 ms between sentences
        parts.append(part)
        total += part.size
        i += 1
    pcm = np.concatenate(parts)[: int(seconds * RATE)]
    pcm = pcm / max(1.0, float(np.abs(pcm).max())) * 0.5 * 32767  # -6 dBFS peak
    out = pcm.astype(np.int16)
    write_wav(path, out)
    path.with_suffix(".tmp.wav").unlink(missing_ok=True)
    return out


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.int16).tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


# --- scoring -------------------------------------------------------------------------

def align(ref: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, float]:
    """The stretch of the (looping) reference that ``window`` carries, and how well they
    correlate (0..1). Circular cross-correlation by FFT: the speaker loops the file."""
    n = ref.size
    w = window[:n].astype(np.float64)
    r = ref.astype(np.float64)
    spec = np.fft.rfft(np.pad(w, (0, n - w.size))) * np.conj(np.fft.rfft(r))
    corr = np.fft.irfft(spec, n)
    lag = int(np.argmax(corr))
    aligned = np.roll(r, lag)[: w.size]  # corr[k] = sum w[n+k] r[n]: w = r shifted by -k
    norm = float(np.linalg.norm(w) * np.linalg.norm(aligned)) or 1.0
    return aligned, float(corr[lag]) / norm


@dataclass
class Score:
    pesq: float
    stoi: float
    corr: float


def score_pair(ref48: np.ndarray, deg48: np.ndarray) -> Score:
    """PESQ-WB and STOI of ``deg48`` against ``ref48`` (same length, 48 kHz)."""
    from pesq import pesq
    from pystoi import stoi
    ref = resample(ref48.astype(np.float64), RATE, SCORE_RATE)
    deg = resample(deg48.astype(np.float64), RATE, SCORE_RATE)
    n = min(ref.size, deg.size)
    ref, deg = ref[:n] / 32768, deg[:n] / 32768
    corr = float(np.dot(ref, deg) / ((np.linalg.norm(ref) * np.linalg.norm(deg)) or 1.0))
    try:
        p = float(pesq(SCORE_RATE, ref, deg, "wb"))
    except Exception:  # pesq refuses a window with no utterance in it (silence received)
        p = float("nan")
    return Score(pesq=p, stoi=float(stoi(ref, deg, SCORE_RATE, extended=False)), corr=corr)


def score_recording(ref: np.ndarray, rec: np.ndarray, skip_s: float,
                    windows: int) -> list[Score]:
    """Up to ``windows`` consecutive windows (as long as the reference) of ``rec`` after
    ``skip_s`` of warm-up, each aligned to the reference and scored."""
    out: list[Score] = []
    n = ref.size
    start = int(skip_s * RATE)
    for k in range(windows):
        window = rec[start + k * n: start + (k + 1) * n]
        if window.size < n:
            break
        aligned, _ = align(ref, window)
        out.append(score_pair(aligned, window))
    return out


# --- Opus alone: the same speech and loss process, no network ------------------------

def loss_mask(cond: Impairment, seed: int, packets: int, size: int = 90) -> list[bool]:
    """Which of ``packets`` 20 ms packets the relay's channel would lose (same process,
    same seed as ``python -m tests.impair --seed``)."""
    ch = Channel(cond, seed)
    return [ch.offer(size, i * 0.020) is None for i in range(packets)]


def opus_alone(ref: np.ndarray, lost: list[bool], bitrate: int = 32_000,
               expected_loss: int = 10, tandem: bool = False,
               speaker_bitrate: int | None = None) -> np.ndarray:
    """``ref`` encoded as the speaker does (``townhall speak``: its default bitrate unless
    ``speaker_bitrate``, FEC for ``expected_loss`` %), the packets ``lost`` dropped,
    decoded with libopus (FEC from the next packet when it has it, else PLC); with
    ``tandem`` encoded and decoded once more at ``bitrate``, as the stage's program is.
    Same length as ``ref``."""
    import av

    from townhall.cli.speak import SPEAKER_BITRATE, SpeakerEncoder
    from townhall.media.chunk import FRAME_SAMPLES
    from townhall.media.opus import OpusEncoder, OpusPacketDecoder

    enc = SpeakerEncoder(bitrate=speaker_bitrate or SPEAKER_BITRATE,
                         expected_loss=expected_loss)
    packets: list[bytes] = []
    frames = ref.size // FRAME_SAMPLES
    for i in range(frames + 3):
        pcm = (ref[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] if i < frames
               else np.zeros(FRAME_SAMPLES, np.int16))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i * FRAME_SAMPLES
        packets += [bytes(p) for p in enc.encode(frame)]
    dec = OpusPacketDecoder()
    out: list[np.ndarray] = []
    for i, pkt in enumerate(packets):
        if not lost[i % len(lost)]:
            out.append(dec.decode(pkt))
        elif i + 1 < len(packets) and not lost[(i + 1) % len(lost)]:
            out.append(dec.recover(packets[i + 1]))
        else:
            out.append(dec.conceal())
    pcm = np.concatenate(out)
    if tandem:
        program, dec2 = OpusEncoder(bitrate), OpusPacketDecoder()
        again = [dec2.decode(program.encode(pcm[i:i + FRAME_SAMPLES]))
                 for i in range(0, pcm.size - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
        pcm = np.concatenate(again)
    # Codec delay: find the decoded speech in time before comparing.
    aligned = _shift_to(ref, pcm)
    return aligned


def _shift_to(ref: np.ndarray, pcm: np.ndarray) -> np.ndarray:
    # The codec's delay is a few ms; find it by cross-correlation over the first 4000 lags.
    probe = ref[: 2 * RATE].astype(np.float64)
    seg = pcm[: probe.size + 4000].astype(np.float64)
    corr = np.correlate(seg, probe, mode="valid")
    lag_best = int(np.argmax(corr))
    out = pcm[lag_best: lag_best + ref.size]
    return np.pad(out, (0, ref.size - out.size)).astype(np.int16)


# --- the lab -------------------------------------------------------------------------

METRICS = """
import sys, httpx
print(httpx.get(sys.argv[1] + "/metrics", timeout=10).text)
"""

COUNTERS = {"townhall_stage_lost_packets": "lost",
            "townhall_stage_fec_recovered": "fec",
            "townhall_stage_resent_packets": "resent",
            "townhall_stage_plc_frames": "concealed",
            "townhall_stage_late_frames": "late",
            "townhall_stage_jitter_target_ms": "target_ms",
            "townhall_stage_speakers": "speakers"}


def parse_metrics(text: str) -> dict[str, float]:
    """The stage counters the harness reports, from the api's Prometheus text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(townhall_stage_[a-z_]+?)(?:_total)?\{[^}]*\} ([0-9.eE+-]+)$", line)
        if m and m.group(1) in COUNTERS:
            key = COUNTERS[m.group(1)]
            found[key] = found.get(key, 0.0) + float(m.group(2))
    return found


@dataclass
class Condition:
    """A named network condition: flags for ``python -m tests.impair`` (uplink)."""

    name: str
    flags: tuple[str, ...] = ()
    impairment: Impairment = field(default_factory=Impairment)


def condition(name: str, *, delay: float = 0, jitter: float = 0, loss: float = 0,
              ge_p: float = 0, ge_r: float = 1, rate: float = 0, spike_every: float = 0,
              spike: float = 0) -> Condition:
    values = {"delay": delay, "jitter": jitter, "loss": loss, "ge-p": ge_p, "ge-r": ge_r,
              "rate": rate, "spike-every": spike_every, "spike": spike}
    flags: list[str] = []
    for key, value in values.items():
        if value != (1 if key == "ge-r" else 0):
            flags += [f"--{key}", str(value)]
    imp = Impairment(delay_ms=delay, jitter_ms=jitter, loss=loss / 100, ge_p=ge_p, ge_r=ge_r,
                     rate_kbps=rate, spike_every_s=spike_every, spike_ms=spike)
    return Condition(name, tuple(flags), imp)


@dataclass
class Run:
    """One condition's outcome: the recording, the stage's and relay's counters, and
    what ``townhall speak`` said about its own link."""

    recording: np.ndarray
    stage: dict[str, float]
    relay: dict[str, Any]
    speak_log: str


def _wait_line(proc: subprocess.Popen[bytes], want: bytes, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip() == want:
            return
    raise AssertionError(f"no {want!r} within {timeout} s")


def _finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, (out or b"").decode(errors="replace")


def run_condition(cond: Condition, speech: Path, seconds: float, workdir: Path,
                  seed: int = 7, src: Path | None = None) -> Run:
    """``townhall speak --file speech`` for ``seconds`` through ``cond``; what a listener
    next to the stage recorded. Bounded: every wait has a timeout. With ``src`` (a source
    tree's ``src`` directory) townhall's processes run that version instead of this one."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with Lab() as lab:
        stage, nat, speaker = lab.host("s"), lab.host("n"), lab.host("p")
        return _run_in(stage, nat, speaker, cond, speech, seconds, workdir, seed, env)


def _run_in(stage: Host, nat: Host, speaker: Host, cond: Condition, speech: Path,
            seconds: float, workdir: Path, seed: int, env: dict[str, str]) -> Run:
    # Media between the speaker and the stage only through the relay, either way.
    stage.nft("add table inet thq\n"
              "add chain inet thq in { type filter hook input priority 0; }\n"
              "add chain inet thq out { type filter hook output priority 0; }\n"
              f"add rule inet thq in ip saddr {speaker.addr} meta l4proto udp drop\n"
              f"add rule inet thq out ip daddr {speaker.addr} meta l4proto udp drop\n")
    stats = workdir / "relay.json"
    relay = nat.popen([sys.executable, "-m", "tests.impair", "--listen", nat.addr,
                       "--target", stage.addr, "--ports", RTC_PORTS, "--stats", str(stats),
                       "--seed", str(seed), *cond.flags], cwd=ROOT, stdout=subprocess.PIPE)
    procs: list[subprocess.Popen[bytes]] = [relay]
    try:
        _wait_line(relay, b"relay ready", 10)
        log = workdir / "serve.log"
        url = f"http://{stage.addr}:8080"
        procs.append(stage.popen(
            [sys.executable, "-m", "townhall", "serve", "--host", stage.addr, "--port", "8080",
             "--open", "--data", str(workdir / "data"), "--public-ip", nat.addr,
             "--rtc-ports", RTC_PORTS], stdout=log.open("wb"), stderr=subprocess.STDOUT,
            cwd=ROOT, env=env))
        space = live_space(speaker, url, "Quality", bound_s=60, log=log)
        rec = workdir / "heard.wav"
        listen = stage.popen([sys.executable, "-m", "townhall", "listen", "--url", url,
                              "--space", space["space"], "--seconds", str(seconds + 8),
                              "--out", str(rec)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
        procs.append(listen)
        speak = speaker.popen([sys.executable, "-m", "townhall", "speak", "--url", url,
                               "--space", space["space"], "--token", space["token"],
                               "--file", str(speech), "--seconds", str(seconds)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env)
        procs.append(speak)
        # The stage's counters while the speaker is still on (the jitter target is a gauge).
        deadline = time.monotonic() + seconds + 30
        counters: dict[str, float] = {}
        while time.monotonic() < deadline and speak.poll() is None:
            _, text = _finish(stage.popen([sys.executable, "-c", METRICS, url], cwd=ROOT,
                                          stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL), 20)
            now = parse_metrics(text)
            if now.get("speakers", 0) >= 1:
                counters = now
            time.sleep(1.0)
        _, speak_log = _finish(speak, 30)
        _, listen_log = _finish(listen, seconds + 60)
        assert rec.exists(), listen_log + log.read_text(errors="replace")[-3000:]
        relay.terminate()
        relay.wait(10)
        relay_stats = json.loads(stats.read_text()) if stats.exists() else {}
        return Run(read_wav(rec), counters, relay_stats, speak_log)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                stop_process(proc, 10)
