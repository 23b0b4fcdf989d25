"""The speaker's reconnect pacing: at once after a drop, quick polls while no stage holds
the Space, Retry-After honoured otherwise, backoff forgotten once live."""

from __future__ import annotations

import json
import random

from townhall.cli.speak import next_delay
from townhall.client.rejoin import RejoinPacer


def pacer(seed: int = 1) -> RejoinPacer:
    return RejoinPacer(rng=random.Random(seed))


def refusal(status: int, slug: str, retry_after: int | None = None) -> str:
    body: dict[str, object] = {"type": f"/problems/{slug}", "status": status}
    if retry_after is not None:
        body["retry_after"] = retry_after
    return f"refused {status}: {json.dumps(body)}"


def test_a_live_session_that_dropped_is_offered_again_at_once() -> None:
    assert next_delay(pacer(), "connection dropped") == 0.0


def test_no_stage_is_polled_quickly_however_often_it_repeats() -> None:
    p = pacer()
    delays = [next_delay(p, refusal(503, "no-stage", 1)) for _ in range(20)]
    assert all(0.25 <= d <= 0.5 for d in delays), delays


def test_no_stage_polling_is_bounded_then_retry_after_is_honoured() -> None:
    p = RejoinPacer(rng=random.Random(1), poll_tries=3)
    for _ in range(3):
        assert p.refused(503, "no-stage", 1.0) <= 0.5
    assert 1.0 <= p.refused(503, "no-stage", 1.0) < 2.0


def test_a_bus_electing_its_leader_is_polled_like_a_takeover() -> None:
    p = pacer()
    delays = [next_delay(p, refusal(503, "bus-unavailable", 2)) for _ in range(10)]
    assert all(0.25 <= d <= 0.5 for d in delays), delays


def test_other_refusals_wait_their_retry_after_jittered() -> None:
    p = pacer()
    delays = [next_delay(p, refusal(503, "stage-busy", 2)) for _ in range(20)]
    assert all(2.0 <= d < 4.0 for d in delays), delays
    assert len(set(delays)) > 1  # jittered: a stage's speakers do not come back together


def test_unreachable_backs_off_and_a_live_session_forgets_it() -> None:
    p = pacer()
    for _ in range(5):
        next_delay(p, "unreachable: connection refused")
    grown = [p.failed() for _ in range(30)]
    assert 1.0 < max(grown) <= p.cap_s
    p.live()  # before, the backoff grown over one failover carried into the next
    assert p.failed() <= 0.5


def test_a_refusal_without_a_problem_body_backs_off() -> None:
    p = pacer()
    assert 0.0 <= next_delay(p, "refused 502: <html>bad gateway</html>") <= 0.5
