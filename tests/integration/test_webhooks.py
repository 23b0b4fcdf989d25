"""Webhooks end to end: a real `townhall serve` posts signed events to a receiver in this
test that fails the first attempts; the events arrive in order, retried under stable ids,
and an api restart while the receiver is down loses none of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Served, running, start_townhall
from tests.waiting import until

KEY = b"townhall-webhook-test-key-32-bytes!!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@dataclass
class Attempt:
    """One POST the receiver got, and what it answered."""

    headers: dict[str, str]
    body: bytes
    answer: str  # "500", "timeout", "503", "200"

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(json.loads(self.body)["type"])


@dataclass
class Receiver:
    """An HTTP endpoint whose answers the test scripts: first ``script`` in turn, then
    ``mode`` ("200" or "503")."""

    script: list[str] = field(default_factory=lambda: ["500", "timeout"])
    mode: str = "200"
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    never: threading.Event = field(default_factory=threading.Event)

    def answer(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.mode

    def accepted(self) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.answer == "200"]

    def all(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)


def serve_receiver(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = receiver.answer()
            with receiver.lock:
                receiver.attempts.append(Attempt(
                    {k.lower(): v for k, v in self.headers.items()}, body, answer))
            if answer == "timeout":
                # Longer than the endpoint's timeout_s: townhall gives up on this attempt.
                receiver.never.wait(5)
                return
            self.send_response(int(answer))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def verify(attempt: Attempt) -> bool:
    """The Standard Webhooks check, written here from the spec, not from townhall."""
    h = attempt.headers
    content = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + attempt.body
    expected = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    sent = [s.split(",", 1)[1] for s in h["webhook-signature"].split(" ")
            if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, s) for s in sent)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    server = serve_receiver(rec)
    yield rec, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    rec.never.set()
    server.shutdown()
    server.server_close()


def hooks_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "webhooks.json"
    path.write_text(json.dumps({
        "endpoints": [{"name": "site", "url": url, "secret": SECRET, "timeout_s": 1}],
        "retry": {"first_s": 0.2, "max_s": 1, "give_up_after_s": 600}}))
    path.chmod(0o600)
    return path


def call(served: Served, token: str, path: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{served.url}/api/v1{path}", json=body or None, timeout=10,
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def types_of(space: str, attempts: list[Attempt]) -> list[str]:
    """Event types in the order first accepted (a redelivery may repeat one)."""
    seen: list[str] = []
    ids: set[str] = set()
    for a in attempts:
        if json.loads(a.body)["data"]["space"]["id"] == space and a.id not in ids:
            ids.add(a.id)
            seen.append(a.type)
    return seen


def test_signed_retried_in_order_and_nothing_lost_across_a_restart(
        tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    config = hooks_file(tmp_path, url)
    data = tmp_path / "data"
    with running(data, "--webhooks", str(config)) as served:
        host, _ = served.guest("Ada")
        bob, bob_id = served.guest("Bob")
        space = call(served, host, "/spaces", title="Hooked")["id"]
        call(served, host, f"/spaces/{space}/start")
        call(served, bob, f"/spaces/{space}/actions", action="request")
        call(served, host, f"/spaces/{space}/actions", action="approve", identity=bob_id)
        wanted = ["space.scheduled", "space.started", "speaker.joined"]
        until(lambda: types_of(space, rec.accepted()) == wanted, 30,
              "three events accepted", every_s=0.05)

        # The first event failed twice (500, then a timeout) and was sent again with the
        # same id and body; every attempt is signed with the secret.
        first = [a for a in rec.all() if a.type == "space.scheduled"]
        assert [a.answer for a in first] == ["500", "timeout", "200"]
        assert len({a.id for a in first}) == 1
        assert len({a.body for a in first}) == 1
        assert all(verify(a) for a in rec.all())
        joined = next(a for a in rec.accepted() if a.type == "speaker.joined")
        assert json.loads(joined.body)["data"]["speaker"]["id"] == bob_id

        # The receiver goes down; the Space ends; the api restarts while it is down.
        rec.mode = "503"
        call(served, host, f"/spaces/{space}/end")
        until(lambda: any(a.answer == "503" for a in rec.all()), 30,
              "a refused attempt of the first event after the end", every_s=0.05)
        assert served.stop() == 0
    rec.mode = "200"
    with running(data, "--webhooks", str(config)) as served:
        final = [*wanted, "speaker.left", "speaker.left", "space.ended"]
        until(lambda: types_of(space, rec.accepted()) == final, 30,
              "the events of the end delivered after the restart", every_s=0.05)
        assert all(verify(a) for a in rec.all())
        # Ids are stable across every retry: each refused id was later accepted.
        refused = {a.id for a in rec.all() if a.answer != "200"}
        assert refused <= {a.id for a in rec.accepted()}
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        assert 'townhall_webhook_sent_total{endpoint="site"}' in text


def test_a_missing_webhooks_file_stops_serve_before_it_starts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="webhooks"):
        start_townhall(tmp_path / "data", "--webhooks", str(tmp_path / "nope.json"))
