"""Stopping child processes: ask (SIGTERM), wait a grace period, then SIGKILL.

One place for the pattern every launcher needs (serve's stage child, the embedded
nats-server, cluster processes, benches and tests): a polite signal so the process can
flush (JetStream, logs, profiles), and a bound so a hung one never hangs its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any

GRACE_S = 10.0
KILLED_S = 5.0  # after SIGKILL only the kernel is left to wait for


def stop_process(proc: subprocess.Popen[Any], grace_s: float = GRACE_S,
                 sig: int = signal.SIGTERM) -> int | None:
    """Send ``sig`` unless it has exited, wait up to ``grace_s``, then SIGKILL;
    returns its exit code (None if it outlived even SIGKILL's short wait)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    return _reap(proc, grace_s)


def stop_processes(procs: Iterable[subprocess.Popen[Any]], grace_s: float = GRACE_S,
                   sig: int = signal.SIGTERM) -> list[int | None]:
    """Stop several at once: signal every one first so their grace periods overlap."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    deadline = time.monotonic() + grace_s
    return [_reap(proc, max(0.0, deadline - time.monotonic())) for proc in procs]


def _reap(proc: subprocess.Popen[Any], grace_s: float) -> int | None:
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(KILLED_S)
    except subprocess.TimeoutExpired:
        return None


async def stop_async_process(proc: asyncio.subprocess.Process, grace_s: float = GRACE_S,
                             sig: int = signal.SIGTERM) -> int | None:
    """``stop_process`` for an asyncio subprocess."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        return await asyncio.wait_for(proc.wait(), KILLED_S)
    except TimeoutError:
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours counts as gone, and is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, grace_s: float = GRACE_S, sig: int = signal.SIGTERM) -> bool:
    """``stop_process`` for a process known only by its pid (e.g. a detached one);
    returns whether it is gone."""
    if not alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if _gone(pid, grace_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return _gone(pid, KILLED_S)


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
