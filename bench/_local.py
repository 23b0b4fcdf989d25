"""Helpers for benchmarks: a local `townhall serve` on a free port and a live Space."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import httpx

from townhall.bus.embedded import free_port
from townhall.procs import stop_process


def start_server(env: dict[str, str] | None = None, extra: Sequence[str] = (),
                 data: Path | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `townhall serve` (all roles, ``extra`` flags, data in ``data`` or a fresh
    directory) and wait until /healthz answers (60 s bound)."""
    port = free_port()
    data = data or Path(tempfile.mkdtemp(prefix="townhall-bench-"))
    log = open(data / "serve.log", "wb")  # kept open for the child
    proc = subprocess.Popen([sys.executable, "-m", "townhall", "serve", "--data", str(data),
                             "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"townhall serve did not start; log in {data / 'serve.log'}")


def live_space(url: str, title: str) -> tuple[str, str]:
    """Create and start a Space as a fresh guest host; returns (space id, host token)."""
    with httpx.Client(base_url=url, timeout=10) as c:
        token = c.post("/api/v1/sessions", json={"name": "bench host"}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        space = c.post("/api/v1/spaces", json={"title": title}, headers=h).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start", headers=h).raise_for_status()
    return str(space), str(token)


def stop(url: str, space: str, token: str, proc: subprocess.Popen[bytes]) -> None:
    """End the Space and stop the server (kill after 10 s)."""
    try:
        httpx.post(f"{url}/api/v1/spaces/{space}/end", timeout=5,
                   headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        pass
    stop_process(proc)


class LocalSpace(NamedTuple):
    """A local `townhall serve` and the live Space a bench runs on."""

    url: str
    space: str
    host: str  # the host's token
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def live_server(title: str, env: dict[str, str] | None = None) -> Iterator[LocalSpace]:
    """A fresh `townhall serve` with one live Space; ends the Space and the server after."""
    url, proc = start_server(env)
    try:
        space, host = live_space(url, title)
    except BaseException:
        stop_process(proc)
        raise
    try:
        yield LocalSpace(url, space, host, proc)
    finally:
        stop(url, space, host, proc)
