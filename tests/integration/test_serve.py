"""`townhall serve` on its embedded NATS: health, metrics, clean shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx

from tests.conftest import Served, start_townhall
from tests.waiting import until


def _nats_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "nats-server"],
                         capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_serve_runs_its_stages_says_when_they_are_gone_and_restarts_them(
        tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data", "--stages", "2")
    try:
        health = httpx.get(f"{served.url}/healthz", timeout=5).json()
        assert health["ok"] is True
        assert health["checks"]["nats"] is True
        metrics = httpx.get(f"{served.url}/metrics", timeout=5)
        assert "townhall_http_requests_total" in metrics.text
        assert (tmp_path / "data" / "token-secret").stat().st_mode & 0o777 == 0o600
        # Both stage children report, each under its own name (on /metrics).
        until(lambda: len(_reporting(served)) == 2, 30, "two stage heartbeats")
        assert sorted(n.rpartition("-stage-")[2] for n in _reporting(served)) == ["1", "2"]
        health = httpx.get(f"{served.url}/healthz", timeout=5).json()
        assert health["ok"] is True and health["checks"]["stage"] is True, health
        # Once no stage reports (here: frozen, so that none is started again at once),
        # /healthz says so (503).
        frozen = _stage_children(served.proc.pid)
        assert len(frozen) == 2
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            until(lambda: httpx.get(f"{served.url}/healthz", timeout=5).status_code == 503,
                  30, "/healthz to say the stages are gone")
            r = httpx.get(f"{served.url}/healthz", timeout=5)
            assert r.json()["checks"] == {"nats": True, "stage": False}, r.text
        finally:
            # Stages that die are started again (same names), and /healthz is 200 again
            # only once a new one reports.
            for pid in frozen:
                os.kill(pid, signal.SIGKILL)
        until(lambda: len(set(_stage_children(served.proc.pid)) - set(frozen)) == 2, 30,
              "both stage children started again")
        until(lambda: httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200,
              30, "the new stages' heartbeats")
    finally:
        assert served.stop(signal.SIGTERM) == 0


def _reporting(served: Served) -> set[str]:
    """The stage nodes whose heartbeats the api exports."""
    text = httpx.get(f"{served.url}/metrics", timeout=5).text
    return set(re.findall(r'^townhall_stage_spaces\{node="([^"]+)"\}', text, re.M))


def test_sigterm_stops_the_embedded_nats(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    children = _nats_children(served.proc.pid)
    assert children, "serve should run a child nats-server"
    assert served.stop(signal.SIGTERM) == 0
    for pid in children:
        assert subprocess.run(["kill", "-0", str(pid)], check=False,
                              capture_output=True).returncode != 0, "nats-server orphaned"


def test_unknown_route_is_problem_json(townhall_shared: Served) -> None:
    r = httpx.get(f"{townhall_shared.url}/nope", timeout=5)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/not-found"


def _stage_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "roles stage"],
                         capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _stage_child(pid: int) -> int:
    return _stage_children(pid)[0]


def test_sigterm_stops_a_stage_that_nats_refuses(tmp_path: Path) -> None:
    """A process still waiting for NATS (here: refused, no credentials) is not deaf to
    SIGTERM: before the fix it ignored it forever, and test runs leaked such stages."""
    import sys

    from townhall.bus.embedded import EmbeddedNats
    from townhall.procs import stop_process

    server = EmbeddedNats(tmp_path / "nats", users={"admin": "x" * 24})
    url = server.start()
    proc = subprocess.Popen([sys.executable, "-m", "townhall", "serve", "--roles", "stage",
                             "--nats", url, "--data", str(tmp_path / "data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        log = tmp_path / "nats" / "nats-server.log"
        # it has tried (and been refused) at least once
        until(lambda: log.exists() and b"authentication error" in log.read_bytes(), 30,
              "the stage reached NATS (and was refused)")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc, 2, signal.SIGKILL)
        server.stop()
