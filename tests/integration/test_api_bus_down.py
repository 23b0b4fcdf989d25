"""The api while its NATS does not answer, as in a partition: the server is frozen
(SIGSTOP), so the connection stays open and nothing comes back. Every route that needs
NATS answers 503 problem+json `bus-unavailable` with Retry-After (it was a 500 from an
unhandled NATS timeout), and the api serves again once NATS is back."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_townhall
from tests.waiting import until
from townhall.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.timeout(90)

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" \
        "a=rtpmap:111 opus/48000/2\r\n"


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own (the session's shared one must never freeze)."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_api_answers_503_while_nats_does_not_answer(tmp_path: Path, nats: EmbeddedNats) -> None:
    # A short NATS timeout keeps the test short; the default (10 s) only waits longer.
    served = start_townhall(tmp_path / "api", "--nats", nats.url, "--roles", "api",
                            env={"TOWNHALL_NATS_TIMEOUT": "1"})
    assert nats.proc is not None
    try:
        token = served.session("host")
        # Generous: the old code answered 500 only after its own 10 s JetStream timeout.
        with httpx.Client(base_url=served.url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            space = c.post("/api/v1/spaces", json={"title": "cut off"}).json()["id"]
            assert c.post(f"/api/v1/spaces/{space}/start").status_code == 200
            os.kill(nats.proc.pid, signal.SIGSTOP)
            try:
                calls = [("POST", f"/whip/{space}", {"content": OFFER,
                                                     "headers": {"Content-Type":
                                                                 "application/sdp"}}),
                         ("GET", f"/api/v1/spaces/{space}", {}),
                         ("POST", f"/api/v1/spaces/{space}/actions",
                          {"json": {"action": "mute"}}),
                         ("POST", "/api/v1/spaces", {"json": {"title": "another"}})]
                for method, path, kwargs in calls:
                    r = c.request(method, path, **kwargs)  # type: ignore[arg-type]
                    assert r.status_code == 503, (method, path, r.status_code, r.text)
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert r.json()["type"] == "/problems/bus-unavailable", r.text
                    assert int(r.headers["Retry-After"]) >= 1
            finally:
                os.kill(nats.proc.pid, signal.SIGCONT)
            # Back once NATS answers again (the client reconnects on its own).
            until(lambda: c.get(f"/api/v1/spaces/{space}").status_code == 200, 30,
                  "the api recovered", every_s=0.2)
    finally:
        served.stop()
