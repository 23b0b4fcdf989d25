"""Real parts for tests: a nats-server from the wheel and `townhall serve` processes,
each on free loopback ports with bounded waits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus import NatsAuth, NatsBus, subjects
from townhall.bus.credentials import USERS_FILE, admin_auth, load_auth_file
from townhall.bus.embedded import EmbeddedNats, free_port
from townhall.procs import stop_process

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream, shared by the session."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    url = server.start()
    yield url
    server.stop()


@dataclass
class Served:
    """A running `townhall serve` child process."""

    url: str
    data: Path
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def guest(self, name: str) -> tuple[str, str]:
        """A guest session (open mode): its token and identity."""
        r = httpx.post(f"{self.url}/api/v1/sessions", json={"name": name}, timeout=10)
        assert r.status_code == 201, r.text
        return str(r.json()["token"]), str(r.json()["identity"])

    def session(self, name: str) -> str:
        """A guest token (open mode)."""
        return self.guest(name)[0]

    def live_space(self, token: str, title: str = "Stage", **body: object) -> str:
        """A Space created and started by ``token`` (its host): its id."""
        with self.client(token) as c:
            made = c.post("/api/v1/spaces", json={"title": title, **body})
            assert made.status_code == 201, made.text
            space = str(made.json()["id"])
            started = c.post(f"/api/v1/spaces/{space}/start")
            assert started.status_code == 200, started.text
        return space

    def nats_auth(self, *roles: str) -> NatsAuth:
        """Credentials for the embedded NATS of this server: the admin user, or the user
        a process running ``roles`` connects as."""
        path = self.data / USERS_FILE
        return load_auth_file(path, roles) if roles else admin_auth(path)

    def nats_url(self) -> str:
        """Its embedded NATS server's URL (from the nats-server child's argv)."""
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
            except (OSError, ValueError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid \
                    and argv[0].endswith("nats-server"):
                return f"nats://{argv[argv.index('-a') + 1]}:{argv[argv.index('-p') + 1]}"
        raise AssertionError("townhall serve has no nats-server child")

    def end_live_spaces(self) -> int:
        """End every live Space, each as its host; how many. A server that outlives a
        test module must not go on mixing the Spaces the module left live."""

        async def live() -> list[dict[str, dict[str, str]]]:
            bus = await NatsBus.connect([self.nats_url()], auth=self.nats_auth())
            try:
                snaps = []
                for key in await bus.kv_keys(subjects.SPACES_BUCKET):
                    entry = await bus.kv_get(subjects.SPACES_BUCKET, key)
                    snap = json.loads(entry.value) if entry and entry.value else {}
                    if snap.get("state") == "live":
                        snaps.append(snap)
                return snaps
            finally:
                await bus.close()

        issuer = TokenIssuer(load_or_create_secret(self.data))
        # In a thread of its own: a module may hold an event loop in this one (Playwright's).
        with ThreadPoolExecutor(1) as pool:
            snaps = pool.submit(lambda: asyncio.run(live())).result(timeout=60)
        for snap in snaps:
            host = snap["host"]
            token = issuer.mint(host["id"], host["name"])
            httpx.post(f"{self.url}/api/v1/spaces/{snap['id']}/end", timeout=10,
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        return len(snaps)

    def wait_healthy(self, wait: float = 30.0) -> Served:
        """Wait (bounded) for /healthz to say ok; a server that exits or never does is
        stopped and its log tail raised."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"townhall serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"townhall serve not healthy after {wait}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        stop_process(self.proc, timeout, sig)
        return int(self.proc.returncode)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_HANDED_OUT: set[int] = set()  # ports given to servers that may not have bound them yet


def fresh_port() -> int:
    """A free loopback port never handed out before in this run: servers started side by
    side cannot be given the same one before either has bound it."""
    port = free_port(avoid=frozenset(_HANDED_OUT))
    _HANDED_OUT.add(port)
    return port


def spawn_townhall(data: Path, *extra: str, env: dict[str, str] | None = None,
                   port: int | None = None) -> Served:
    """Start `townhall serve` on a free port without waiting for it (``Served.wait_healthy``):
    several servers a test needs then boot side by side."""
    port = port or fresh_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data / f"serve-{port}.log"
    argv = [sys.executable, "-m", "townhall", "serve", "--port", str(port),
            "--data", str(data), *extra]
    # One stage process unless a test asks for more, whatever the machine's cores (the
    # default, cores - 1, would make every test's server heavier on a big machine).
    proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env={"TOWNHALL_STAGES": "1", **os.environ, **(env or {})},
                            start_new_session=True)
    return Served(url=f"http://127.0.0.1:{port}", data=data, proc=proc, log=log, argv=argv)


def start_townhall(data: Path, *extra: str, wait: float = 30.0,
                   env: dict[str, str] | None = None) -> Served:
    """Start `townhall serve` on a free port and wait for /healthz to say ok."""
    return spawn_townhall(data, *extra, env=env).wait_healthy(wait)


@contextmanager
def running(data: Path, *extra: str, wait: float = 30.0,
            env: dict[str, str] | None = None) -> Iterator[Served]:
    """``start_townhall`` as a context: the server is stopped however the block ends."""
    served = start_townhall(data, *extra, wait=wait, env=env)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def townhall(tmp_path: Path) -> Iterator[Served]:
    """A fresh `townhall serve` (all roles, embedded NATS) for one test."""
    with running(tmp_path / "data") as served:
        yield served


@pytest.fixture(scope="session")
def _townhall_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with running(tmp_path_factory.mktemp("townhall") / "data") as served:
        yield served


@pytest.fixture(scope="module")
def townhall_shared(_townhall_session: Served) -> Iterator[Served]:
    """One default `townhall serve` (all roles, embedded NATS) shared by every module that
    asks, for tests that only add Spaces of their own, never change the server or its
    settings, and never count what other tests made: each start costs seconds. The live
    Spaces a module leaves are ended after it."""
    yield _townhall_session
    _townhall_session.end_live_spaces()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
