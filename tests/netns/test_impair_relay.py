"""The impairment relay on real datagrams between namespace hosts: a client reaches the
target only through it, the delay it adds is there, loss it is told to make happens, and
its counters say so."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netlab import Lab, why_unavailable

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}")]

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

# Prints "<answered> <min rtt ms>" for N probes to host:port, one at a time, each
# waiting at most argv[4] seconds for its echo.
PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]))
got, best = 0, 1e9
for i in range(int(sys.argv[3])):
    t = time.monotonic()
    try:
        s.sendto(b"p%d" % i, (sys.argv[1], int(sys.argv[2])))
        while s.recvfrom(2048)[0] != b"p%d" % i:
            pass
        got += 1; best = min(best, (time.monotonic() - t) * 1000)
    except OSError:
        pass
print(got, best)
"""


def _probe(lab: Lab, port: int, count: int, wait_s: float = 0.5) -> tuple[int, float]:
    out = lab.hosts["c"].run(sys.executable, "-c", PROBE, lab.hosts["r"].addr, str(port),
                             str(count), str(wait_s)).split()
    return int(out[0]), float(out[1])


def _relay(lab: Lab, port: int, stats: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start the relay in host r and wait (bounded) until it says it listens."""
    r, t = lab.hosts["r"], lab.hosts["t"]
    proc = r.popen([sys.executable, "-m", "tests.impair", "--listen", r.addr, "--target",
                    t.addr, "--ports", str(port), "--stats", str(stats), *extra],
                   cwd=str(Path(__file__).resolve().parents[2]), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == b"relay ready", "relay not ready in 10 s"
    return proc


def test_relay_delays_and_loses_real_datagrams(tmp_path: Path) -> None:
    with Lab() as lab:
        for name in ("c", "r", "t"):
            lab.host(name)
        t = lab.hosts["t"]
        t.popen([sys.executable, "-c", ECHO, t.addr, "9999"])
        t.popen([sys.executable, "-c", ECHO, t.addr, "9998"])
        clean = _relay(lab, 9999, tmp_path / "a.json", "--delay", "60", "--down-delay", "40")
        deadline = time.monotonic() + 10       # the echo servers may still be starting
        while _probe(lab, 9999, 1)[0] == 0:
            assert time.monotonic() < deadline, "no echo through the relay within 10 s"
        got, best = _probe(lab, 9999, 20)
        assert got == 20
        assert best >= 100                     # 60 ms up + 40 ms down, never less

        lossy = _relay(lab, 9998, tmp_path / "b.json", "--loss", "50", "--seed", "3")
        got, _ = _probe(lab, 9998, 60, wait_s=0.1)
        assert 10 <= got <= 50                 # half of the requests lost (sd ~3.9)
        for proc in (clean, lossy):
            proc.terminate()
            proc.wait(10)
    up = json.loads((tmp_path / "a.json").read_text())["up"]
    assert up["delivered"] == up["offered"] >= 21 and up["lost_random"] == 0
    up = json.loads((tmp_path / "b.json").read_text())["up"]
    assert up["offered"] == 60 and up["lost_random"] == 60 - got
