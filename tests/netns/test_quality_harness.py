"""The listening-quality harness works end to end (bench/quality holds the figures).

One short condition: espeak-ng speech from ``townhall speak --file`` in a namespace, the
stage reached only through the impairment relay at 5 % random loss, ``townhall listen
--out`` next to the stage. Asserts that the harness measured something — scores computed,
the relay's and the stage's counters read — and never a quality threshold.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests import quality
from tests.netlab import why_unavailable

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240),
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}"),
              pytest.mark.skipif(quality.why_no_speech() is not None,
                                 reason=str(quality.why_no_speech()))]


def test_alignment_finds_a_shifted_window() -> None:
    rng = __import__("numpy").random.default_rng(3)
    ref = rng.normal(0, 3000, quality.RATE).astype("int16")
    window = __import__("numpy").roll(ref, -12345)[:24000]
    aligned, corr = quality.align(ref, window)
    assert corr > 0.99 and (aligned == window).all()


def test_speech_through_a_lossy_relay_is_recorded_and_scored(tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    ref = quality.make_speech(speech, seconds=6.0)
    cond = quality.condition("5 % random", loss=5)
    run = quality.run_condition(cond, speech, seconds=16, workdir=tmp_path / "run")
    scores = quality.score_recording(ref, run.recording, skip_s=4.0, windows=1)
    assert len(scores) == 1, (run.recording.size, run.speak_log)
    score = scores[0]
    assert not math.isnan(score.pesq) and 1.0 <= score.pesq <= 4.7, score
    assert 0.0 <= score.stoi <= 1.0, score
    # The relay carried the media and lost some of it; the stage saw the losses.
    assert run.relay["up"]["delivered"] >= 200 and run.relay["up"]["lost_random"] >= 1, run.relay
    assert {"lost", "fec", "concealed", "target_ms", "resent"} <= run.stage.keys(), run.stage
    # The stage asked `townhall speak` for lost packets (NACK) and got some back in time.
    assert run.stage["resent"] >= 1, run.stage
    # The same speech through Opus alone with the relay's loss process, scored the same way.
    lost = quality.loss_mask(cond.impairment, seed=7, packets=ref.size // 960 + 3)
    alone = quality.score_pair(ref, quality.opus_alone(ref, lost))
    assert not math.isnan(alone.pesq), alone
