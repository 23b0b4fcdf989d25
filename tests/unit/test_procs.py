"""Stopping child processes: real children, one that ends on SIGTERM, one that ignores it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from townhall.procs import alive, stop_async_process, stop_pid, stop_process, stop_processes

# Each child says "ready" once its SIGTERM handling is in place, then sleeps.
ENDS_WITH_3 = ("import signal, sys, time\n"
               "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
               "print('ready', flush=True)\ntime.sleep(60)\n")
IGNORES_TERM = ("import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(60)\n")


def child(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_a_child_that_ends_on_sigterm_gets_to_exit_its_own_way() -> None:
    assert stop_process(child(ENDS_WITH_3)) == 3


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = child(IGNORES_TERM)
    assert stop_process(proc, grace_s=0.5) == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL


def test_another_signal_can_ask_first() -> None:
    # KeyboardInterrupt unhandled: python ends itself with SIGINT (no grace period used).
    # The handler is set explicitly: a child of a background job inherits SIGINT ignored,
    # and python then leaves it ignored.
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                             "print('ready', flush=True)\ntime.sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    assert stop_process(proc, sig=signal.SIGINT) == -signal.SIGINT


def test_an_exited_child_is_just_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    proc.wait(30)
    assert stop_process(proc) == 7


def test_several_at_once_each_end_their_own_way() -> None:
    codes = stop_processes([child(ENDS_WITH_3), child(IGNORES_TERM)], grace_s=0.5)
    assert codes == [3, -signal.SIGKILL]


async def test_the_asyncio_variant_kills_a_child_that_ignores_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", IGNORES_TERM,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    assert await stop_async_process(proc, grace_s=0.5) == -signal.SIGKILL
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ENDS_WITH_3,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    assert await stop_async_process(proc) == 3


def test_by_pid_a_child_that_ignores_sigterm_is_killed() -> None:
    proc = child(IGNORES_TERM)
    assert alive(proc.pid)
    assert stop_pid(proc.pid, grace_s=0.5)
    assert not alive(proc.pid)
    assert proc.returncode is None or proc.returncode == -signal.SIGKILL
