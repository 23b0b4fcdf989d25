"""Webhooks: does a dead endpoint slow the Spaces down, and how fast does a backlog drain?

One `townhall serve --webhooks` with one endpoint, a local HTTP receiver (as in
tests/integration/test_webhooks.py). Phase "healthy": the receiver answers 200 at once;
phase "hanging": it never answers (every attempt waits out timeout_s = 1 s, then retries).
After 20 warm-up creates, in each phase N Spaces are created (POST /api/v1/spaces, 10 per
guest identity, the create budget being per identity) and their latencies taken; then the
receiver answers again and the clock runs until every event of the hanging phase has been
accepted (the backlog, delivered one at a time in order).

    .venv/bin/python -m bench webhooks          (writes its table into bench/README.md)
    .venv/bin/python -m bench.webhooks.run      (prints only)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._local import start_server
from tests.integration.test_webhooks import SECRET, Receiver, serve_receiver
from townhall.procs import stop_process

N = 100


def create(url: str, n: int, tag: str) -> list[float]:
    """Create ``n`` Spaces; each call's latency in ms."""
    out = []
    tokens = [httpx.post(f"{url}/api/v1/sessions", json={"name": f"{tag}{i}"},
                         timeout=10).json()["token"] for i in range(n // 10)]
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/api/v1/spaces", json={"title": f"{tag} {i}"},
                       headers={"Authorization": f"Bearer {tokens[i // 10]}"})
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
    return out


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str]) -> dict[str, Any]:
    del argv
    rec = Receiver(script=[])
    receiver = serve_receiver(rec)
    config = Path(tempfile.mkdtemp(prefix="townhall-hooks-")) / "webhooks.json"
    config.write_text(json.dumps({
        "endpoints": [{"name": "bench", "secret": SECRET, "timeout_s": 1,
                       "url": f"http://127.0.0.1:{receiver.server_address[1]}/hooks"}],
        "retry": {"first_s": 0.05, "max_s": 0.2, "max_attempts": 10_000}}))
    config.chmod(0o600)
    url, proc = start_server(extra=["--webhooks", str(config)])
    rows = []
    try:
        create(url, 20, "warmup")  # a cold process's first calls are not the question
        healthy = create(url, N, "healthy")
        rec.mode = "timeout"
        hanging = create(url, N, "hanging")
        backlog = N - sum(1 for a in rec.accepted()
                          if json.loads(a.body)["data"]["space"]["title"].startswith("hanging"))
        rec.mode = "200"
        rec.never.set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and len(
                {a.id for a in rec.accepted()}) < 2 * N + 20:
            time.sleep(0.01)
        drained = time.monotonic() - t0
        for name, lat in (("receiver answers 200", healthy),
                          ("receiver never answers", hanging)):
            rows.append([name, N, f"{statistics.median(lat):.1f}", f"{p(lat, 0.95):.1f}"])
        notes = ("Same process, one phase after the other, after 20 warm-up creates; a shared "
                 "machine, so compare the medians, not single runs' p95. "
                 f"Backlog after the hanging phase: {backlog} events, delivered in order in "
                 f"{drained:.2f} s once the receiver answered again "
                 f"({backlog / drained:.0f} events/s, one in flight).")
    finally:
        stop_process(proc, 20)
        receiver.shutdown()
    return {"title": "Webhooks: Space creation with a healthy vs a hanging endpoint",
            "command": ".venv/bin/python -m bench webhooks",
            "columns": ["endpoint", "creates", "median ms", "p95 ms"],
            "rows": rows, "notes": notes}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    for row in result["rows"]:
        print(row)
    print(result["notes"])
