"""Webhooks cannot be forged or steered: only the api may put events into the stream, and
a receiver's redirect never carries a signed body anywhere else."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nats
import pytest

from tests.conftest import Served, start_townhall
from tests.integration.test_webhooks import SECRET
from tests.security.test_security_nats import nats_address
from tests.waiting import until
from townhall.bus import subjects

pytestmark = pytest.mark.timeout(120)


class Counting(ThreadingHTTPServer):
    """Answers every POST with ``status`` (and ``location``), counting them."""

    def __init__(self, status: int, location: str = "") -> None:
        self.hits: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits.append(self.rfile.read(int(self.headers["content-length"])))
                self.send_response(status)
                if location:
                    self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Counting]:
    server = Counting(200)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def redirecting(elsewhere: Counting) -> Iterator[Counting]:
    server = Counting(307, elsewhere.url)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redirecting: Counting) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("hooksec")
    config = root / "webhooks.json"
    config.write_text(json.dumps({
        "endpoints": [{"name": "site", "url": redirecting.url, "secret": SECRET}],
        "retry": {"first_s": 0.1, "max_s": 0.2}}))
    config.chmod(0o600)
    s = start_townhall(root / "data", "--webhooks", str(config))
    yield s
    s.stop()


def test_a_redirect_is_a_failure_never_followed(served: Served, redirecting: Counting,
                                                elsewhere: Counting) -> None:
    token = served.session("Ada")
    with served.client(token) as c:
        assert c.post("/api/v1/spaces", json={"title": "Steer"}).status_code == 201
    # Retried (a 307 is no delivery), and not once sent where the receiver pointed.
    until(lambda: len(redirecting.hits) >= 3, 30, "the event retried at the receiver",
          every_s=0.05)
    assert elsewhere.hits == []


@pytest.mark.parametrize("role", ["edge", "stage"])
async def test_only_the_api_stores_webhook_events(served: Served, role: str) -> None:
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(nats_address(served), allow_reconnect=False, error_cb=collect,
                            **served.nats_auth(role).options())
    try:
        await nc.publish(subjects.hooks("k3v9x2m4qa"), b'{"type":"space.ended"}',
                         headers={"Nats-Msg-Id": "forged"})
        await nc.flush()
        for _ in range(200):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await nc.close()
    api = await nats.connect(nats_address(served), **served.nats_auth("api").options())
    try:
        ack = await api.jetstream().publish(subjects.hooks("k3v9x2m4qa"), b"{}",
                                            headers={"Nats-Msg-Id": f"api-{role}"})
        assert ack.stream == subjects.WEBHOOKS_STREAM
    finally:
        await api.close()

