"""LevelMeter: who is speaking, at most 4 reports a second whatever the tick rate."""

import numpy as np

from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.levels import LevelMeter, level


def _tone(amplitude: float) -> np.ndarray:
    t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 440 * t) * amplitude * 32767).astype(np.int16)


def test_level_scale() -> None:
    assert level(np.zeros(FRAME_SAMPLES, np.int16)) == 0.0
    assert level(np.zeros(0, np.int16)) == 0.0
    loud, quiet = level(_tone(0.5)), level(_tone(0.01))
    assert 0.8 < loud <= 1.0
    assert 0.0 < quiet < loud


def test_reports_at_most_four_a_second_at_the_mixer_tick_rate() -> None:
    meter = LevelMeter()
    reports = []
    for tick in range(500):  # 10 s of 20 ms ticks
        meter.add("ada", _tone(0.3))
        r = meter.report("sp", {"ada"}, now=tick * 0.020, wall=1000 + tick * 0.020)
        if r is not None:
            reports.append(r)
    assert 38 <= len(reports) <= 41
    assert reports[0] == {"space": "sp", "levels": {"ada": reports[0]["levels"]["ada"]},
                          "speaking": ["ada"], "at": 1000.0}


def test_peak_since_last_report_then_reset_and_silent_or_muted_not_speaking() -> None:
    meter = LevelMeter()
    assert meter.report("sp", set(), now=0.0, wall=0.0) is None  # nobody: no message
    meter.add("ada", _tone(0.5))
    meter.add("ada", None)
    meter.add("bob", None)  # muted or quiet
    r = meter.report("sp", {"ada", "bob"}, now=0.3, wall=5.0)
    assert r is not None
    assert r["levels"]["ada"] > 0.8 and r["levels"]["bob"] == 0.0
    assert r["speaking"] == ["ada"]
    r2 = meter.report("sp", {"ada", "bob"}, now=0.6, wall=5.3)
    assert r2 is not None and r2["levels"] == {"ada": 0.0, "bob": 0.0}
    assert r2["speaking"] == []
