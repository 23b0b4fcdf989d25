"""Stopping child processes: ask (SIGTERM), wait a grace period, then SIGKILL; and
keeping them up (``Supervisor``: a child that dies is started again, with backoff).

One place for the pattern every launcher needs (serve's stage children, the embedded
nats-server, cluster processes, benches and tests): a polite signal so the process can
flush (JetStream, logs, profiles, a stage's hand-over), and a bound so a hung one never
hangs its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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


@dataclass
class Backoff:
    """When to start again a child that died, with no I/O: soon the first time, twice as
    late each time after, and soon again once it had run for ``healthy_s`` (a crash loop
    must not spin, a rare crash must not wait)."""

    first_s: float = 0.5
    max_s: float = 30.0
    healthy_s: float = 30.0
    delay_s: float = 0.0

    def died(self, ran_s: float) -> float:
        """The child died after running ``ran_s`` seconds: how long to wait to restart it."""
        if ran_s >= self.healthy_s:
            self.delay_s = 0.0
        self.delay_s = self.first_s if self.delay_s == 0.0 else min(self.max_s,
                                                                     2 * self.delay_s)
        return self.delay_s


@dataclass
class _Kept:
    name: str
    argv: list[str]
    popen: dict[str, Any]
    proc: subprocess.Popen[bytes]
    started: float
    backoff: Backoff = field(default_factory=Backoff)
    due: float | None = None  # when to restart it, once it has died
    restarts: int = 0


class Supervisor:
    """Keeps child processes running until ``stop``: a thread polls them and starts a dead
    one again after its backoff.

    Children started with a parent-death signal (``die_with_parent``) get it when the
    *thread* that started them ends: restarted ones come from the supervisor's thread,
    which lives until ``stop`` (where they are stopped anyway)."""

    def __init__(self, poll_s: float = 0.2) -> None:
        self.poll_s = poll_s
        self._kept: list[_Kept] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, name: str, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` now and keep it running; ``popen`` goes to ``subprocess.Popen``."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **popen)
        with self._lock:
            self._kept.append(_Kept(name, argv, popen, proc, time.monotonic()))
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="supervisor",
                                            daemon=True)
            self._thread.start()
        return proc

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        """The current process of every kept child."""
        with self._lock:
            return [k.proc for k in self._kept]

    def restarts(self, name: str) -> int:
        """How many times the child ``name`` was started again."""
        with self._lock:
            return sum(k.restarts for k in self._kept if k.name == name)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            with self._lock:
                for kept in self._kept:
                    if not self._stopping.is_set():
                        self._tend(kept, time.monotonic())

    def _tend(self, kept: _Kept, now: float) -> None:
        if kept.due is None:
            code = kept.proc.poll()
            if code is None:
                return
            kept.due = now + kept.backoff.died(now - kept.started)
            log.warning("%s exited (%s); starting it again in %.1f s", kept.name, code,
                        kept.due - now)
        if now >= kept.due:
            try:
                kept.proc = subprocess.Popen(kept.argv, **kept.popen)
            except OSError:
                log.exception("could not start %s again", kept.name)
                kept.due = now + kept.backoff.died(0.0)
                return
            kept.started, kept.due = now, None
            kept.restarts += 1

    def stop(self, grace_s: float = GRACE_S) -> list[int | None]:
        """Stop restarting, then stop every child (``stop_processes``)."""
        with self._lock:
            self._stopping.set()
        return stop_processes(self.procs, grace_s)
