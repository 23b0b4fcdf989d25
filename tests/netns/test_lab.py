"""The namespace lab itself: hosts reach each other, loss and partitions apply to real
datagrams, and closing leaves nothing behind."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.netlab import PREFIX, Host, Lab, namespaces, why_unavailable

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(why_unavailable() is not None,
                                 reason=f"namespace lab unavailable: {why_unavailable()}")]

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
got = 0
for i in range(int(sys.argv[2])):
    try:
        s.sendto(b"x%d" % i, (sys.argv[1], 9999))  # a local drop rule answers EPERM
        s.recvfrom(2048); got += 1
    except OSError:
        pass
print(got)
"""


def _echoes(lab: Lab, count: int) -> int:
    a, b = lab.hosts["a"], lab.hosts["b"]
    return int(a.run(sys.executable, "-c", PROBE, b.addr, str(count)).strip())


def _tcp_ok(lab: Lab) -> bool:
    a, b = lab.hosts["a"], lab.hosts["b"]
    code = f"import socket; socket.create_connection(('{b.addr}', 9998), timeout=1).close()"
    try:
        a.run(sys.executable, "-c", code)
    except RuntimeError:
        return False
    return True


def test_hosts_loss_partition_and_cleanup() -> None:
    with Lab() as lab:
        a, b = lab.host("a"), lab.host("b")
        assert a.addr != b.addr
        echo = b.popen([sys.executable, "-c", ECHO, b.addr])
        listener = b.popen([sys.executable, "-c",
                            f"import socket,time; s=socket.create_server(('{b.addr}', 9998)); "
                            "time.sleep(600)"])
        # Wait (bounded) for the echo server: the first probes may go before it binds.
        for _ in range(50):
            if _echoes(lab, 1) == 1:
                break
        assert _echoes(lab, 50) == 50            # a clean bridge loses nothing

        a.drop_udp(100)
        assert _echoes(lab, 20) == 0             # every outgoing datagram dropped
        a.drop_udp(50)
        got = _echoes(lab, 200)
        assert 40 < got < 160                    # about half (binomial; bounds are ~8 sigma)
        a.heal()
        assert _echoes(lab, 50) == 50

        assert _tcp_ok(lab)
        a.partition()
        assert not _tcp_ok(lab)
        a.heal()
        assert _tcp_ok(lab)
        made = [ns for ns in namespaces() if ns.startswith(f"{PREFIX}{lab.id}-")]
        assert len(made) == 3                    # bridge, a, b
        pids = [echo.pid, listener.pid]
    assert not [ns for ns in namespaces() if ns.startswith(f"{PREFIX}{lab.id}-")]
    for pid in pids:
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_closes_even_when_the_test_fails() -> None:
    lab_id = ""
    with pytest.raises(ZeroDivisionError), Lab() as lab:
        lab_id = lab.id
        lab.host("a").drop_udp(10)
        _ = 1 / 0
    assert lab_id and not [ns for ns in namespaces() if ns.startswith(f"{PREFIX}{lab_id}-")]


def test_the_machine_network_is_untouched() -> None:
    before = socket.if_nameindex()
    with Lab() as lab:
        lab.host("a")
        lab.host("b")
        assert socket.if_nameindex() == before   # the bridge and veths live in namespaces


def test_nat_hosts() -> None:
    with Lab() as lab:
        router, outside = lab.host("r"), lab.host("o")
        inner = lab.behind_nat("p", router)
        served = lab.behind_nat("q", router, one_to_one=True)
        seen = outside.popen([sys.executable, "-c", SEEN, outside.addr])
        direct = served.popen([sys.executable, "-c", ECHO, served.addr])
        # MASQUERADE: out as the router's address, replies come back...
        assert _ask(inner, outside.addr, 9997) == router.addr
        # ...but nothing unsolicited gets in, even for a host with a route to the inside.
        inner.popen([sys.executable, "-c", ECHO, inner.addr])
        outside.run("ip", "route", "add", inner.addr, "via", router.addr)
        assert _ask(outside, inner.addr, 9999) is None
        assert _ask(inner, outside.addr, 9997) == router.addr  # (its echo server is up)
        # 1:1: what is sent to the router's address reaches the host behind it.
        assert _ask(outside, router.addr, 9999) == "echo"
        assert seen.poll() is None and direct.poll() is None


SEEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9997))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(peer[0].encode(), peer)
"""

ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
for _ in range(25):  # the server may not be bound yet
    try:
        s.sendto(b"echo", (sys.argv[1], int(sys.argv[2])))
        print(s.recvfrom(2048)[0].decode()); break
    except OSError:
        pass
"""


def _ask(host: Host, addr: str, port: int) -> str | None:
    out = host.run(sys.executable, "-c", ASK, addr, str(port)).strip()
    return out or None


def test_sweep_takes_leftovers_of_dead_runs_only() -> None:
    from tests.netlab import OWNERS, sh, sweep

    dead = "0dea"
    sh("ip", "netns", "add", f"{PREFIX}{dead}-x")          # a crashed run's leftover
    OWNERS.mkdir(parents=True, exist_ok=True)
    (OWNERS / dead).write_text("999999999")                 # no such process
    try:
        with Lab() as live:
            live.host("a")
            assert f"{PREFIX}{dead}-x" not in namespaces()  # swept when the lab started
            sweep()                                         # another run sweeping now...
            mine = [ns for ns in namespaces() if ns.startswith(f"{PREFIX}{live.id}-")]
            assert len(mine) == 2                           # ...leaves a live lab alone
    finally:
        subprocess.run(["ip", "netns", "del", f"{PREFIX}{dead}-x"], capture_output=True)
