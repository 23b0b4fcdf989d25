"""The retry schedule: exponential, capped, jittered, bounded by attempts and age."""

from townhall.hooks.backoff import RetrySchedule


def test_delays_double_and_are_capped() -> None:
    s = RetrySchedule(first_s=1.0, max_s=8.0)
    assert [s.delay(n, rand=0.999999) for n in range(1, 6)] == \
        [pytest_approx(1.0), pytest_approx(2.0), pytest_approx(4.0), pytest_approx(8.0),
         pytest_approx(8.0)]


def pytest_approx(x: float) -> object:
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_jitter_spans_the_upper_half() -> None:
    s = RetrySchedule(first_s=4.0, max_s=100.0)
    assert s.delay(1, rand=0.0) == 2.0
    assert s.delay(1, rand=0.5) == 3.0
    assert s.delay(3, rand=0.0) == 8.0


def test_gives_up_after_max_attempts() -> None:
    s = RetrySchedule(first_s=1.0, max_attempts=3)
    assert s.next_attempt(2, first_seen=0.0, now=10.0, rand=0.0) == 11.0
    assert s.next_attempt(3, first_seen=0.0, now=10.0, rand=0.0) is None


def test_gives_up_when_the_next_try_is_past_the_age_bound() -> None:
    s = RetrySchedule(first_s=10.0, max_s=10.0, give_up_after_s=100.0)
    assert s.next_attempt(1, first_seen=0.0, now=80.0, rand=0.0) == 85.0
    assert s.next_attempt(1, first_seen=0.0, now=96.0, rand=0.0) is None
