"""A real TURN server (Debian's coturn) for tests: ``use-auth-secret`` with a generated
secret, on free ports, started with a bounded wait and always stopped.

    with Coturn(ip) as turn:               # listens on ip:turn.port (UDP and TCP)
        turn.urls("udp", "tcp")            # turn:ip:port?transport=udp / ...tcp
        turn.secret_file                   # for townhall serve --turn-secret-file

``popen`` runs it somewhere else (a netlab host's ``popen``) when given.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from townhall.procs import stop_process

START_TIMEOUT_S = 15.0


def why_unavailable() -> str | None:
    """None when coturn can run here; otherwise the reason, for a skip message."""
    if shutil.which("turnserver") is None:
        return "no `turnserver` (coturn; `make test` installs it as root)"
    return None


def host_ipv4() -> str:
    """This machine's first non-loopback IPv4 address (what aioice gathers as host)."""
    from aioice.ice import get_host_addresses

    found = get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not found:
        raise RuntimeError("no non-loopback IPv4 address")
    return found[0]


def stun_answers(ip: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a STUN Binding request to ip:port (UDP) gets a success response."""
    txid = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (ip, port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == txid


class Coturn:
    """One coturn process; ``log`` collects its output."""

    def __init__(self, ip: str, *, popen: Callable[..., subprocess.Popen[bytes]] | None = None,
                 probe: Callable[[str, int], bool] | None = None,
                 workdir: Path | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.ip = ip
        self.port = random.randrange(20_000, 30_000)
        self.relay_low = random.randrange(31_000, 39_000)
        self.secret = secrets.token_hex(16)
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="th-coturn-"))
        self.secret_file = self.dir / "turn-secret"
        self.log = self.dir / "turnserver.log"
        self._popen = popen or subprocess.Popen
        self._probe = probe or stun_answers
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls  # (certificate, key): turns: on tls_port too
        self.tls_port = self.port + 1

    def argv(self) -> list[str]:
        return ["turnserver", "-n", "--listening-ip", self.ip,
                "--listening-port", str(self.port),
                "--min-port", str(self.relay_low), "--max-port", str(self.relay_low + 200),
                "--use-auth-secret", f"--static-auth-secret={self.secret}",
                "--realm", "townhall.test", "--no-cli", "--no-dtls",
                "--fingerprint", "--simple-log", "--log-file", "stdout",
                "--pidfile", str(self.dir / "turnserver.pid"),
                "--userdb", str(self.dir / "turndb"), "--verbose",
                *(["--cert", str(self.tls[0]), "--pkey", str(self.tls[1]),
                   "--tls-listening-port", str(self.tls_port)] if self.tls else ["--no-tls"])]

    def urls(self, *transports: str) -> list[str]:
        """TURN URLs for ``transports``: udp, tcp, or tls (turns:, when started with tls)."""
        return [f"turns:{self.ip}:{self.tls_port}?transport=tcp" if t == "tls"
                else f"turn:{self.ip}:{self.port}?transport={t}"
                for t in transports or ("udp",)]

    def start(self) -> Coturn:
        self.secret_file.write_text(self.secret + "\n")
        os.chmod(self.secret_file, 0o600)
        self.proc = self._popen(self.argv(), stdout=self.log.open("wb"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited {self.proc.returncode}:\n{self.tail()}")
            if self._probe(self.ip, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"turnserver not answering after {START_TIMEOUT_S}s:\n"
                           f"{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def allocations_for(self, identity: str) -> int:
        """How many Allocate requests of ``identity``'s credentials coturn granted."""
        text = self.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines()
                   if f":{identity}>" in line and "ALLOCATE processed, success" in line)

    def __enter__(self) -> Coturn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def turn_flags(turn: Coturn, transports: Sequence[str] = ("udp", "tcp")) -> list[str]:
    """`townhall serve` flags for this TURN server."""
    flags: list[Any] = []
    for url in turn.urls(*transports):
        flags += ["--turn-url", url]
    return [*flags, "--turn-secret-file", str(turn.secret_file)]
