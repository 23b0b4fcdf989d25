"""`townhall serve` on its embedded NATS: health, metrics, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import start_townhall


def _nats_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "nats-server"],
                         capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_serve_is_healthy_and_exports_metrics(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    try:
        health = httpx.get(f"{served.url}/healthz", timeout=5).json()
        assert health["ok"] is True
        assert health["checks"]["nats"] is True
        metrics = httpx.get(f"{served.url}/metrics", timeout=5)
        assert "townhall_http_requests_total" in metrics.text
        assert (tmp_path / "data" / "token-secret").stat().st_mode & 0o777 == 0o600
    finally:
        assert served.stop(signal.SIGTERM) == 0


def test_sigterm_stops_the_embedded_nats(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    children = _nats_children(served.proc.pid)
    assert children, "serve should run a child nats-server"
    assert served.stop(signal.SIGTERM) == 0
    for pid in children:
        assert subprocess.run(["kill", "-0", str(pid)], check=False,
                              capture_output=True).returncode != 0, "nats-server orphaned"


def test_unknown_route_is_problem_json(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    try:
        r = httpx.get(f"{served.url}/nope", timeout=5)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == "/problems/not-found"
    finally:
        served.stop()


def _stage_child(pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "roles stage"],
                         capture_output=True, text=True, check=False).stdout
    return int(out.split()[0])


def test_healthz_says_when_the_stage_child_is_gone(tmp_path: Path) -> None:
    served = start_townhall(tmp_path / "data")
    try:
        deadline = time.monotonic() + 30
        health: dict[str, Any] = {}
        while time.monotonic() < deadline and health.get("checks", {}).get("stage") is not True:
            health = httpx.get(f"{served.url}/healthz", timeout=5).json()
            time.sleep(0.5)
        assert health["ok"] is True and health["checks"]["stage"] is True, health
        os.kill(_stage_child(served.proc.pid), signal.SIGKILL)
        deadline = time.monotonic() + 30
        r = httpx.get(f"{served.url}/healthz", timeout=5)
        while time.monotonic() < deadline and r.status_code == 200:
            time.sleep(0.5)
            r = httpx.get(f"{served.url}/healthz", timeout=5)
        assert r.status_code == 503, r.text
        assert r.json()["checks"] == {"nats": True, "stage": False}
    finally:
        served.stop()
