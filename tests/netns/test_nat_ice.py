"""Speakers and stages behind NAT, for real: network namespaces joined by routers that
MASQUERADE (unsolicited inbound dropped), forward no UDP at all, or map 1:1 — with
`townhall serve`, `townhall speak`, coturn and a listener each running on a lab host."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netlab
from tests import turn as turnlab
from tests.netlab import Host, Lab, why_unavailable
from townhall.procs import stop_process

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300),
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}"),
              pytest.mark.skipif(turnlab.why_unavailable() is not None,
                                 reason=str(turnlab.why_unavailable()))]

ROOT = Path(__file__).resolve().parents[2]

# Where no path can exist, speak's two ICE attempts need not each wait the default 15 s.
FAIL_FAST = ("--connect-timeout", "5")

LISTEN = """
import asyncio, sys
from tests.tone import hear_tone
sys.exit(0 if asyncio.run(hear_tone(sys.argv[1], sys.argv[2], 440, 40)) else 1)
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as made:
        yield made


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def serve(host: Host, tmp: Path, port: int, *flags: str) -> tuple[Path, str]:
    """`townhall serve` on ``host`` (its own address, guests allowed); its log."""
    log = tmp / f"serve-{host.name}-{port}.log"
    host.popen([sys.executable, "-m", "townhall", "serve", "--host", host.addr,
                "--port", str(port), "--open", "--data", str(tmp / f"data-{port}"), *flags],
               stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    return log, f"http://{host.addr}:{port}"


def live_space(host: Host, url: str, log: Path) -> dict[str, str]:
    """Wait (bounded) for the server at ``url``, seen from ``host``; a live Space."""
    return netlab.live_space(host, url, "NAT", bound_s=60, log=log)


def speak(host: Host, url: str, space: dict[str, str], tmp: Path,
          *extra: str) -> subprocess.Popen[bytes]:
    return host.popen([sys.executable, "-m", "townhall", "speak", "--url", url,
                       "--space", space["space"], "--token", space["token"], "--tone", "440",
                       *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)


def hears(host: Host, url: str, space: dict[str, str]) -> bool:
    """Whether a listener on ``host`` hears the tone within 40 s."""
    code, _ = finish(host.popen([sys.executable, "-c", LISTEN, url, space["space"]],
                                cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT), 90)
    return code == 0


def fails_ice(proc: subprocess.Popen[bytes]) -> str:
    """``townhall speak``'s last stderr line, once it gave up (bounded)."""
    code, err = finish(proc, 120)
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("speak: ICE failed") and "--turn-url" in last, err
    return last


def start_turn(host: Host, tmp: Path) -> turnlab.Coturn:
    def probe(ip: str, port: int) -> bool:
        code = f"from tests.turn import stun_answers; print(stun_answers('{ip}', {port}))"
        return host.run(sys.executable, "-c", code).strip() == "True"

    return turnlab.Coturn(host.addr, popen=host.popen, probe=probe, workdir=tmp).start()


def test_speaker_behind_masquerade_reaches_a_reachable_stage_without_turn(
        lab: Lab, tmp_path: Path) -> None:
    stage, router = lab.host("s"), lab.host("r")
    speaker = lab.behind_nat("p", router)
    log, url = serve(stage, tmp_path, 8080)
    space = live_space(speaker, url, log)
    proc = speak(speaker, url, space, tmp_path, "--seconds", "60")
    try:
        assert hears(stage, url, space), log.read_text(errors="replace")[-3000:]
    finally:
        stop_process(proc, 10)


def test_speaker_on_a_network_without_udp_fails_clearly_and_relays_through_turn(
        lab: Lab, tmp_path: Path) -> None:
    stage, router, relay = lab.host("s"), lab.host("r"), lab.host("t")
    speaker = lab.behind_nat("p", router, udp=False)
    turn = start_turn(relay, tmp_path)
    # Without TURN: no path for the audio at all. speak says so and stops.
    log, url = serve(stage, tmp_path, 8080)
    space = live_space(speaker, url, log)
    fails_ice(speak(speaker, url, space, tmp_path, *FAIL_FAST))
    # With TURN over TCP (aiortc uses the first TURN URL; UDP would be blocked too).
    log, url = serve(stage, tmp_path, 8081, *turnlab.turn_flags(turn, ("tcp",)))
    space = live_space(speaker, url, log)
    proc = speak(speaker, url, space, tmp_path, "--seconds", "60")
    try:
        assert hears(stage, url, space), log.read_text(errors="replace")[-3000:] + turn.tail()
    finally:
        stop_process(proc, 10)
    assert turn.allocations_for(space["identity"]) >= 1, turn.tail()


def test_stage_behind_one_to_one_nat_needs_and_uses_its_public_ip(
        lab: Lab, tmp_path: Path) -> None:
    home, cloud = lab.host("r1"), lab.host("r2")
    speaker = lab.behind_nat("p", home)
    stage = lab.behind_nat("s", cloud, one_to_one=True)
    public = cloud.addr  # what the cloud's 1:1 NAT maps to the stage's private address
    # Not announced: both ends offer private addresses only, and ICE fails.
    log, _ = serve(stage, tmp_path, 8080)
    space = live_space(speaker, f"http://{public}:8080", log)
    fails_ice(speak(speaker, f"http://{public}:8080", space, tmp_path, *FAIL_FAST))
    # Announced (and bound inside a port range, as a firewall would want): heard.
    log, inside = serve(stage, tmp_path, 8081, "--public-ip", public,
                        "--rtc-ports", "40000-40099")
    space = live_space(speaker, f"http://{public}:8081", log)
    proc = speak(speaker, f"http://{public}:8081", space, tmp_path, "--seconds", "60")
    try:
        assert hears(stage, inside, space), log.read_text(errors="replace")[-3000:]
    finally:
        stop_process(proc, 10)


def start_relay(host: Host, target: Host, ports: str, stats: Path,
                *impairments: str) -> subprocess.Popen[bytes]:
    """tests/impair.py on ``host``: a 1:1 UDP NAT to ``target`` with delay and loss."""
    proc = host.popen([sys.executable, "-m", "tests.impair", "--listen", host.addr,
                       "--target", target.addr, "--ports", ports, "--stats", str(stats),
                       *impairments], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == b"relay ready", "relay not ready"
    return proc


def test_stage_behind_an_impaired_one_to_one_nat_is_heard(lab: Lab, tmp_path: Path) -> None:
    stage, nat, speaker = lab.host("s"), lab.host("n"), lab.host("p")
    # The stage's media is reachable only through the relay: no UDP between the speaker
    # and the stage's own address, either way (HTTP still goes directly).
    stage.nft("add table inet thice\n"
              "add chain inet thice in { type filter hook input priority 0; }\n"
              "add chain inet thice out { type filter hook output priority 0; }\n"
              f"add rule inet thice in ip saddr {speaker.addr} meta l4proto udp drop\n"
              f"add rule inet thice out ip daddr {speaker.addr} meta l4proto udp drop\n")
    relay = start_relay(nat, stage, "40000-40009", tmp_path / "relay.json",
                        "--delay", "30", "--jitter", "10", "--down-delay", "30",
                        "--loss", "3", "--seed", "7")
    log, url = serve(stage, tmp_path, 8080, "--public-ip", nat.addr,
                     "--rtc-ports", "40000-40009")
    space = live_space(speaker, url, log)
    proc = speak(speaker, url, space, tmp_path, "--seconds", "60")
    try:
        assert hears(stage, url, space), log.read_text(errors="replace")[-3000:]
    finally:
        stop_process(proc, 10)
        relay.terminate()
        relay.wait(10)
    stats = json.loads((tmp_path / "relay.json").read_text())
    # Media both ways through the relay (the only UDP path): RTP up, the return feed down.
    assert stats["up"]["delivered"] >= 50 and stats["down"]["delivered"] >= 50, stats
