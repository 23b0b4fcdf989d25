"""ICE end to end on this machine: GET /api/v1/ice and the WHIP Link headers, speakers
forced through a real coturn (relay only), expired TURN credentials refused and replaced,
and `townhall speak` failing ICE in one bounded line when no path exists."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from tests.certs import make_ca
from tests.conftest import Served, running, start_townhall
from tests.stages import live_space_with
from tests.tone import hear_tone
from tests.turn import Coturn, host_ipv4, turn_flags, why_unavailable
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.cli.speak import ICE_FAILED, ReturnRecorder, publish_once, tone
from townhall.client.whip import offer
from townhall.ice import parse_link_headers, turn_credentials
from townhall.procs import stop_process

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=str(why_unavailable()))]


@pytest.fixture(scope="module")
def ca_and_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A test CA, and a certificate it signed for this machine's address (for turns:)."""
    return make_ca(tmp_path_factory.mktemp("ca"), ["localhost"], [host_ipv4()])


@pytest.fixture(scope="module")
def turn(tmp_path_factory: pytest.TempPathFactory,
         ca_and_cert: tuple[Path, Path, Path]) -> Iterator[Coturn]:
    with Coturn(host_ipv4(), workdir=tmp_path_factory.mktemp("coturn"),
                tls=ca_and_cert[1:]) as server:
        yield server


@pytest.fixture(scope="module")
def served(turn: Coturn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_townhall(tmp_path_factory.mktemp("ice") / "data", *turn_flags(turn),
                       "--stun-url", f"stun:{turn.ip}:{turn.port}")
    yield s
    s.stop()


def speak_cmd(served: Served, space: str, token: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "townhall", "speak", "--url", served.url, "--space", space,
            "--token", token, "--tone", "440", *extra]


def start_speaking(argv: list[str], log: Path,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                            env={**os.environ, **(env or {})})


def test_ice_servers_are_minted_per_caller(served: Served, turn: Coturn) -> None:
    r = httpx.get(f"{served.url}/api/v1/ice", timeout=10)
    assert r.status_code == 401 and r.json()["type"] == "/problems/token-missing"
    guest = httpx.post(f"{served.url}/api/v1/sessions", json={"name": "Ada"},
                       timeout=10).json()
    token, identity = guest["token"], guest["identity"]
    before = time.time()
    body = httpx.get(f"{served.url}/api/v1/ice", timeout=10,
                     headers={"Authorization": f"Bearer {token}"}).json()
    stun, relay = body["iceServers"]
    assert stun == {"urls": [f"stun:{turn.ip}:{turn.port}"]}
    assert relay["urls"] == turn.urls("udp", "tcp")
    expires, _, who = relay["username"].partition(":")
    assert who == identity and int(expires) == body["expires"]
    assert before + 3600 - 1 <= body["expires"] <= time.time() + 3600
    assert relay["credential"] == turn_credentials(turn.secret.encode(), identity,
                                                   body["expires"])[1]
    listener = TokenIssuer(load_or_create_secret(served.data)).mint(
        "lis", "Lis", role="listener", ttl=600)
    r = httpx.get(f"{served.url}/api/v1/ice", timeout=10,
                  headers={"Authorization": f"Bearer {listener}"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/insufficient-grant"
    spec = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    assert {"401", "403"} <= set(spec["paths"]["/api/v1/ice"]["get"]["responses"])


async def test_whip_answer_carries_the_servers_as_links(served: Served, turn: Coturn) -> None:
    space, people = live_space_with(served, "Host")
    token = people[0][0]
    pc = RTCPeerConnection()  # only to make an offer: never connected
    pc.addTransceiver("audio", direction="sendrecv")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=30) as http:
            r = await offer(http, f"{served.url}/whip/{space}", token, pc.localDescription.sdp)
            assert r.status_code == 201, r.text
            servers = parse_link_headers(r.headers.get_list("link"))
            await http.delete(served.url + r.headers["location"],
                              headers={"Authorization": f"Bearer {token}"})
    finally:
        await pc.close()
    assert [s["urls"] for s in servers] == [[f"stun:{turn.ip}:{turn.port}"],
                                             *[[u] for u in turn.urls("udp", "tcp")]]
    assert servers[1]["username"].endswith(":" + people[0][1])
    # The stage gathered through the same TURN server: its answer has a relay candidate.
    assert " typ relay" in r.text


def test_whip_patch_says_to_send_a_complete_offer(served: Served) -> None:
    r = httpx.patch(f"{served.url}/whip/abcdefghij/0123456789abcdef", timeout=10,
                    content="a=candidate:1 1 udp 1 192.0.2.1 9 typ host",
                    headers={"Content-Type": "application/trickle-ice-sdpfrag"})
    assert r.status_code == 405 and r.headers["allow"] == "DELETE"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/whip-patch-unsupported"
    assert "complete offer" in r.json()["detail"]
    spec = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    assert "405" in spec["paths"]["/whip/{space}/{session}"]["patch"]["responses"]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_relay_only_speaker_is_heard_through_turn(
        turn: Coturn, tmp_path: Path, transport: str,
        ca_and_cert: tuple[Path, Path, Path]) -> None:
    # Only this transport's TURN URL: aiortc uses the first TURN URL it is given. The
    # stage (gathering a relay candidate too) and the speaker trust the test CA (turns:).
    trust = {"SSL_CERT_FILE": str(ca_and_cert[0])}
    with running(tmp_path / "data", *turn_flags(turn, (transport,)), env=trust) as s:
        space, people = live_space_with(s, "Host")
        token, identity = people[0]
        before = turn.allocations_for(identity)
        proc = start_speaking(speak_cmd(s, space, token, "--relay-only", "--seconds", "40"),
                              tmp_path / "speak.log", trust)
        try:
            heard = await hear_tone(s.url, space, 440, within_s=30)
            assert heard, (tmp_path / "speak.log").read_text() + s.tail()
        finally:
            stop_process(proc, 10)
        assert turn.allocations_for(identity) > before, turn.tail()


async def test_expired_turn_credentials_are_refused_and_a_retry_gets_fresh_ones(
        served: Served, turn: Coturn) -> None:
    space, people = live_space_with(served, "Host")
    token, identity = people[0]
    expired = int(time.time()) - 60
    username, credential = turn_credentials(turn.secret.encode(), identity, expired)
    stale = [{"urls": turn.urls("udp"), "username": username, "credential": credential}]
    recorder, stop = ReturnRecorder(), asyncio.Event()
    pcm = tone(440)
    why = await publish_once(served.url, space, token, pcm, recorder, stop,
                             servers=stale, relay_only=True)
    assert why.startswith(ICE_FAILED) and "relay" in why
    assert turn.allocations_for(identity) == 0  # coturn refused the stale credentials
    # The retry fetches fresh credentials from the server and goes live through TURN
    # (again while 503: the stage may not hold the new Space yet, as speak's loop does).
    for _ in range(20):
        task = asyncio.create_task(publish_once(served.url, space, token, pcm, recorder,
                                                stop, relay_only=True))
        for _ in range(150):  # until the return feed plays (30 s at most)
            if recorder.chunks or task.done():
                break
            await asyncio.sleep(0.2)
        if not (task.done() and task.result().startswith("refused 503")):
            break
        await asyncio.sleep(0.5)
    stop.set()
    assert await asyncio.wait_for(task, 20) == "stopped"
    assert recorder.chunks and np.concatenate(recorder.chunks).size > 0
    assert turn.allocations_for(identity) >= 1


def test_speak_says_ice_failed_and_exits_when_turn_is_unreachable(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    # A TURN URL where nothing answers: relay-only has no path at all.
    with running(tmp_path / "data", "--turn-url", "turn:127.0.0.1:9?transport=udp",
                 "--turn-secret-file", str(secret)) as s:
        space, people = live_space_with(s, "Host")
        # It exits by itself (had it retried for ever, the timeout would raise).
        done = subprocess.run(speak_cmd(s, space, people[0][0], "--relay-only"),
                              capture_output=True, timeout=90, check=False)
        err = done.stderr.decode()
        assert done.returncode == 3, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("speak: ICE failed") and "--turn-url" in last, err
