"""Per-speaker link quality: loss over a sliding window and jitter → good / fair / poor."""

from __future__ import annotations

from townhall.media.linkquality import LinkGauge, grade


def test_grades_follow_loss_and_jitter() -> None:
    assert grade(0.0, 0.002) == "good"
    assert grade(0.03, 0.002) == "fair"
    assert grade(0.0, 0.030) == "fair"
    assert grade(0.15, 0.002) == "poor"
    assert grade(0.0, 0.080) == "poor"


def test_loss_is_taken_over_the_last_seconds_only() -> None:
    gauge = LinkGauge(window_s=5.0)
    received = missing = 0
    for second in range(10):  # 10 s: 50 packets a second, 10 of them missing
        received, missing = received + 40, missing + 10
        gauge.sample(received, missing, float(second))
    report = gauge.report(received, missing, 0.004, 10.0)
    assert report == {"quality": "poor", "loss_pct": 20.0, "jitter_ms": 4.0}
    for second in range(11, 18):  # then 7 clean seconds: the old loss leaves the window
        received += 50
        report = gauge.report(received, missing, 0.004, float(second))
    assert report["quality"] == "good" and report["loss_pct"] == 0.0
