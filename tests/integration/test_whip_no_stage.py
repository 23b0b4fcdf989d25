"""WHIP while no stage holds the Space: 503 no-stage at once, the Space untouched.

The stage that owned the Space is frozen (SIGSTOP): its NATS subscription stays (the server
has not noticed yet) but it no longer renews its lease, as when a stage hangs or its
machine dies. A speaker's client must learn at once that no stage holds the Space, so it
retries while another stage takes over, instead of waiting out the api's 15 s request;
and an offer sent while the frozen stage's lease still stands is answered so once it lapses,
or once that stage has sent no heartbeat for 2 s even while its lease stands (a stage cut
off, or whose NATS client is moving, never gets the request).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import start_townhall
from townhall.bus import Bus, NatsBus, subjects
from townhall.procs import stop_process

pytestmark = pytest.mark.timeout(120)

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" \
        "a=rtpmap:111 opus/48000/2\r\n"


async def lease(bus: Bus, space: str, held: bool, bound_s: float) -> None:
    """Wait until the Space's stage lease exists (``held``) or is gone."""
    async with asyncio.timeout(bound_s):
        while True:
            if (await bus.kv_get(subjects.LEASES_BUCKET, space) is not None) == held:
                return
            await asyncio.sleep(0.2)


@pytest.fixture
def stage(nats_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stage-only `townhall serve`; killed afterwards (it stands for a dead stage)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "townhall", "serve", "--roles", "stage", "--nats", nats_url,
         "--data", str(tmp_path / "stage")],
        stdout=(tmp_path / "stage.log").open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    yield proc
    stop_process(proc, 10, signal.SIGKILL)


async def test_whip_while_no_stage_holds_the_space_is_refused_at_once(
        nats_url: str, tmp_path: Path, stage: subprocess.Popen[bytes]) -> None:
    served = start_townhall(tmp_path / "api", "--nats", nats_url, "--roles", "api")
    bus = await NatsBus.connect([nats_url])
    try:
        token = served.session("host")
        space = served.live_space(token, "no stage")
        await lease(bus, space, held=True, bound_s=60)
        entry = await bus.kv_get(subjects.LEASES_BUCKET, space)
        assert entry is not None
        holder = entry.value
        os.kill(stage.pid, signal.SIGSTOP)
        with served.client(token) as c:
            # Sent while the frozen stage's lease still stands: the api asks that stage,
            # which never answers. It must give up once the lease lapses (≤ 3 s, checked
            # every second), not wait out its 15 s: a speaker coming back early in a
            # failover was held that long. 8 s is the bound here.
            r = c.post(f"/whip/{space}", content=OFFER, timeout=8,
                       headers={"Content-Type": "application/sdp"})
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("/problems/no-stage")
        await lease(bus, space, held=False, bound_s=30)
        with served.client(token) as c:
            before = c.get(f"/api/v1/spaces/{space}").json()
            # 5 s is shorter than the api's wait for a stage's answer (15 s): without the
            # lease check this request timed out instead of being answered.
            r = c.post(f"/whip/{space}", content=OFFER, timeout=5,
                       headers={"Content-Type": "application/sdp"})
            after = c.get(f"/api/v1/spaces/{space}").json()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/problems/no-stage")
        assert int(r.headers["retry-after"]) >= 1
        assert after["state"] == "live" and after["stage"] == before["stage"]

        # The lease names the frozen stage again and stays (renewed here, as by a stage whose
        # renewals get through while the speaker's request does not): only its silence tells.
        async def renew() -> None:
            while True:
                await bus.kv_put(subjects.LEASES_BUCKET, space, holder)
                await asyncio.sleep(0.5)

        renewing = asyncio.create_task(renew())
        try:
            await lease(bus, space, held=True, bound_s=10)
            with served.client(token) as c:
                # Without the heartbeat check the api waited out its 15 s (the lease stood).
                r = await asyncio.to_thread(
                    c.post, f"/whip/{space}", content=OFFER, timeout=8,
                    headers={"Content-Type": "application/sdp"})
            assert r.status_code == 503, r.text
            assert r.json()["type"].endswith("/problems/no-stage")
            assert "stopped answering" in r.json()["detail"]
        finally:
            renewing.cancel()
    finally:
        await bus.close()
        served.stop()
