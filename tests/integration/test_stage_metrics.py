"""The stage's heartbeat on the api's /metrics, against a real `townhall serve`: the node
appears at once, ticks grow ~50 a second while a Space is live, a speaker is counted, and
a stage that stops reporting is dropped after 10 s."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Served
from tests.stages import speak, stage_child
from tests.waiting import until
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(150)


def scrape(served: Served) -> dict[str, dict[str, float]]:
    """{metric name: {node: value}} for the townhall_stage_* samples labelled by node."""
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = {}
    for name, node, value in re.findall(
            r'^(townhall_stage_\w+)\{node="([^"]+)"\} (\S+)$', text, re.M):
        out.setdefault(name, {})[node] = float(value)
    return out


Scrape = dict[str, dict[str, float]]


def scraped(served: Served, cond: Callable[[Scrape], bool], bound_s: float,
            what: str) -> Scrape:
    """The first scrape for which ``cond`` holds (tests/waiting.py's bounded wait)."""
    def check() -> tuple[Scrape, ...]:  # (m,): truthy even when m is empty (no stage left)
        m = scrape(served)
        return (m,) if cond(m) else ()

    return until(check, bound_s, what, every_s=0.25)[0]


def test_stage_metrics_on_the_api(tmp_path: Path, townhall: Served) -> None:
    served = townhall
    speaker: subprocess.Popen[bytes] | None = None
    try:
        stage_pid, _ = stage_child(served.proc.pid)
        m = scraped(served, lambda m: bool(m.get("townhall_stage_ticks_total")), 20,
                  "a stage reporting")
        [node] = m["townhall_stage_ticks_total"]
        assert m["townhall_stage_speakers"][node] == 0
        assert m["townhall_stage_report_age_seconds"][node] < 5

        host = served.session("Ada")
        space = served.live_space(host, "Metrics")
        speaker = speak(served, space, host, tmp_path / "speak.log")
        scraped(served, lambda m: m["townhall_stage_speakers"].get(node) == 1, 40, "one speaker")

        # Ticks grow at the mixer's 50 a second (generous bounds: a loaded 2-core box):
        # 200 more within 8 s (at least 25 a second), and not faster than 70 a second,
        # counted from a fresh report (the stage reports once a second).
        stale = scrape(served)["townhall_stage_ticks_total"][node]
        first = scraped(served, lambda m: m["townhall_stage_ticks_total"][node] != stale,
                        5, "a fresh stage report")["townhall_stage_ticks_total"][node]
        t0 = time.monotonic()
        m = scraped(served, lambda m: m["townhall_stage_ticks_total"][node] >= first + 200,
                    8, "200 mixer ticks")
        rate = (m["townhall_stage_ticks_total"][node] - first) / (time.monotonic() - t0)
        assert rate <= 70, rate
        assert m["townhall_stage_spaces"][node] == 1
        # exported for this node as a real number (its value is unit-tested in
        # tests/unit/test_api_stageboard.py; how late a frame may be is not asserted here)
        late = m["townhall_stage_max_late_ms"][node]
        assert math.isfinite(late) and late >= 0, late
        for name in ("late_frames", "fec_recovered", "plc_frames", "lost_packets"):
            assert f"townhall_stage_{name}_total" in m

        with served.client(host) as c:
            c.post(f"/api/v1/spaces/{space}/end").raise_for_status()
        m = scraped(served, lambda m: m["townhall_stage_spaces"].get(node) == 0
                  and m["townhall_stage_speakers"].get(node) == 0, 15, "Space released")
        ticks = m["townhall_stage_ticks_total"][node]
        time.sleep(2)
        assert scrape(served)["townhall_stage_ticks_total"][node] == ticks  # clock stopped

        # Frozen rather than killed: `townhall serve` starts a dead stage again at once,
        # under the same name.
        os.kill(stage_pid, signal.SIGSTOP)
        try:
            scraped(served, lambda m: m["townhall_stage_report_age_seconds"].get(node, 0) > 3,
                    10, "the silent stage's report ageing")
            scraped(served, lambda m: node not in m.get("townhall_stage_ticks_total", {}), 20,
                    "the silent stage dropped")
        finally:
            os.kill(stage_pid, signal.SIGKILL)
    finally:
        if speaker is not None:
            stop_process(speaker, 15)
