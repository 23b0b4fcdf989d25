"""townhall storm against a real `townhall serve` with a tiny edge cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Served, start_townhall

CAP = 10


@pytest.fixture(scope="module")
def live_space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    served = start_townhall(tmp_path_factory.mktemp("storm"),
                            env={"TOWNHALL_EDGE_CAPACITY": str(CAP)})
    token = served.session("host")
    space = served.live_space(token, "storm")
    yield served, space
    with served.client(token) as host:
        host.post(f"/api/v1/spaces/{space}/end")
    served.stop(timeout=10)


def _storm(*args: str) -> subprocess.CompletedProcess[str]:
    # stdout is a pipe: the dashboard must render without a terminal.
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "townhall", "storm", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_storm_accounts_for_every_listener(live_space: tuple[Served, str],
                                          tmp_path: Path) -> None:
    served, space = live_space
    out = _storm("--url", served.url, "--space", space, "--listeners", "30", "--ramp", "2",
                 "--hold", "6", "--workers", "2", "--reactions", "2", "--requests", "0.5",
                 "--report", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "connected / target" in out.stdout  # the dashboard rendered
    rep = json.loads((tmp_path / "report.json").read_text())
    s = rep["summary"]
    assert s["accounting_balanced"]
    assert s["connected"] + s["refused"] + s["failed"] == 30 and s["pending"] == 0
    assert s["left"] == 0  # no --stay: everyone admitted stays to the end
    assert 1 <= s["connected"] <= CAP  # nobody leaves, so at most the cap got in
    assert s["refused"] >= 30 - CAP - s["failed"]
    assert all(r.startswith("refused: 4503") for r in s["reasons"] if r.startswith("refused"))
    assert s["refusals"] > s["refused"]  # refused listeners retried (with backoff)
    assert s["gaps"] == 0 and s["chunks"] > 0
    assert s["actors"].get("reaction 202", 0) > 0
    assert len(rep["series"]) >= 5
    for name in ("listeners.png", "joins.png", "delay.png", "server.png", "index.html"):
        assert (tmp_path / name).stat().st_size > 0


def _summary(out: subprocess.CompletedProcess[str], report: Path) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    s: dict[str, Any] = json.loads((report / "report.json").read_text())["summary"]
    assert s["accounting_balanced"] and s["pending"] == 0
    return s


def test_refused_listeners_get_in_when_others_leave(live_space: tuple[Served, str],
                                                    tmp_path: Path) -> None:
    served, space = live_space
    out = _storm("--url", served.url, "--space", space, "--listeners", "25", "--ramp", "1",
                 "--hold", "12", "--stay", "2", "--workers", "2", "--report", str(tmp_path))
    s = _summary(out, tmp_path)
    assert s["connected"] + s["left"] + s["refused"] + s["failed"] == 25
    assert s["left"] >= 1                       # listeners left after their stay...
    assert s["admitted_after_refusal"] >= 1     # ...and refused ones got in after them
    assert s["wait_after_refusal_p50_ms"] is not None
    assert s["admitted_joins"] > CAP
    assert s["gaps"] == 0 and s["failed"] == 0


@pytest.mark.parametrize("protocol", ["ogg", "mix"])
def test_ogg_and_mixed_listeners(live_space: tuple[Served, str], tmp_path: Path,
                                 protocol: str) -> None:
    served, space = live_space
    out = _storm("--url", served.url, "--space", space, "--listeners", "16", "--ramp", "1",
                 "--hold", "5", "--protocol", protocol, "--workers", "2",
                 "--report", str(tmp_path))
    s = _summary(out, tmp_path)
    assert 1 <= s["connected"] <= CAP and s["failed"] == 0
    assert s["connected"] + s["refused"] == 16
    assert s["bytes"] > 16_000                  # Ogg pages flowed
    if protocol == "mix":
        assert s["chunks"] > 0 and s["gaps"] == 0  # the WebSocket three quarters
    else:
        assert s["chunks"] == 0  # Ogg listeners check bytes, not chunks


def test_unknown_space_exits_nonzero(live_space: tuple[Served, str]) -> None:
    served, _ = live_space
    out = _storm("--url", served.url, "--space", "nosuchspace", "--listeners", "1")
    assert out.returncode == 2
    assert "no Space 'nosuchspace'" in out.stderr


def test_unreachable_url_exits_nonzero() -> None:
    from townhall.bus.embedded import free_port

    out = _storm("--url", f"http://127.0.0.1:{free_port()}", "--space", "x", "--listeners", "1")
    assert out.returncode == 2
    assert "cannot reach" in out.stderr


@pytest.fixture(scope="module")
def open_space(townhall_shared: Served) -> tuple[Served, str]:
    """A live Space on a server with the default edge capacity (nobody is refused)."""
    space = townhall_shared.live_space(townhall_shared.session("host"), "viral page")
    return townhall_shared, space


def _browser_storm(served: Served, space: str, report: Path,
                   *extra: str) -> dict[str, Any]:
    out = _storm("--url", served.url, "--space", space, "--listeners", "20", "--ramp", "2",
                 "--hold", "8", "--workers", "2", "--protocol", "browser",
                 "--report", str(report), *extra)
    s = _summary(out, report)
    assert s["connected"] == 20 and s["failed"] == 0, s["reasons"]
    assert s["viewers_counted"] == 20  # every viewer reported its requests
    return s


def test_browser_viewers_count_every_request(open_space: tuple[Served, str],
                                             tmp_path: Path) -> None:
    served, space = open_space
    s = _browser_storm(served, space, tmp_path, "--reactions", "4")
    per = s["requests_per_viewer"]
    assert per["page"] == {"mean": 1.0, "max": 1}  # each viewer opened the link once
    # whatever the page references was fetched, and no viewer fetched more than the page
    # names (immutable assets come from the worker's shared cache after the first viewers)
    assert s["requests"]["asset"] >= 1 and 1 <= per["asset"]["max"] <= 8
    # the page load costs at most the snapshot and the edge list; nothing polls after it
    assert per["api"]["max"] <= 2
    assert s["requests"]["list"] == 0
    assert s["api_requests_per_viewer_minute"] is not None
    assert s["api_requests_per_viewer_minute"] < 1
    assert s["viewer_minutes_after_ramp"] > 0
    assert s["page_to_first_audio_p50_ms"] is not None
    assert s["page_to_first_audio_p99_ms"] >= s["page_to_first_audio_p50_ms"]
    assert s["api_cpu_ms_per_viewer_minute"] is not None  # the server's process was found
    assert s["socket_reactions"] > 0 and "reaction 202" not in s["actors"]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert any(r["api_rps"] > 0 for r in rep["series"])  # the page loads show in the plot
    assert (tmp_path / "api.png").stat().st_size > 0


def test_page_poll_reference_costs_thirty_api_requests_per_viewer_minute(
        open_space: tuple[Served, str], tmp_path: Path) -> None:
    served, space = open_space
    s = _browser_storm(served, space, tmp_path, "--page-poll", "2")
    # one snapshot GET every 2 s per open page: 30 per viewer-minute
    assert 20 <= s["api_requests_per_viewer_minute"] <= 40
    assert s["requests_per_viewer"]["snapshot"]["mean"] >= 4
    assert s["page_poll_s"] == 2
