"""Network namespaces as test "hosts": the one helper every multi-host, NAT and impairment
test shares.

A ``Lab`` builds namespaces named ``th<lab>-<name>`` (so a crashed run's leftovers are
recognisable and swept by the next one), joins them to a bridge that lives in a namespace of
its own (the machine's own network is never touched), and undoes everything it made when
it closes, even after a failure: processes started in its hosts, nft rules, veths and
namespaces. It needs root and ``ip``; ``nft`` for loss and partitions.

    with Lab() as lab:
        a = lab.host("a")                  # 10.231.<lab>.1/24 on the lab's bridge
        b = lab.host("b")
        proc = b.popen(["python3", "-m", "http.server", "8000", "--bind", b.addr])
        a.drop_udp(15)                     # 15 % of a's outgoing UDP is lost (kernel)
        a.partition()                      # a can send and receive nothing ...
        a.heal()                           # ... until healed
        r = lab.host("r")                  # a router on the bridge, and behind it:
        p = lab.behind_nat("p", r)         # 10.<232+n>.<lab>.2, MASQUERADE as r.addr
        q = lab.behind_nat("q", r, one_to_one=True)  # everything to r.addr goes to q

Addresses are private ones inside namespaces this lab made; nothing leaves them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PREFIX = "th"
OWNERS = Path("/run/townhall-netlab")  # <lab id> -> pid of the process that made it
NFT_TABLE = "thlab"
_CMD_TIMEOUT_S = 10.0
ROOT = Path(__file__).resolve().parents[1]


class LabUnavailable(RuntimeError):
    """This machine cannot build namespaces (not root, or no ``ip``/``nft``)."""


def why_unavailable(need_nft: bool = True) -> str | None:
    """None when a Lab can be built here; otherwise the reason, for a skip message."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if need_nft and shutil.which("nft") is None:
        return "no `nft` command (nftables; `make test` installs it as root)"
    probe = f"{PREFIX}probe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False,
                          timeout=_CMD_TIMEOUT_S)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False,
                   timeout=_CMD_TIMEOUT_S)
    return None


def sh(*argv: str, ns: str | None = None, stdin: str | None = None) -> str:
    """Run one command (in namespace ``ns``), bounded; raise with its stderr on failure."""
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(full, input=stdin.encode() if stdin is not None else None,
                          capture_output=True, check=False, timeout=_CMD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def namespaces() -> list[str]:
    """Every network namespace on the machine, by name."""
    out = sh("ip", "netns", "list")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _owner_alive(lab_id: str) -> bool:
    """Whether the process that made lab ``lab_id`` still runs (its labs are in use)."""
    try:
        pid = int((OWNERS / lab_id).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def sweep(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces a crashed lab left behind (names ``th<hex>-...`` whose owning
    process is gone; labs of other live test runs are left alone); returns them."""
    pattern = re.compile(rf"^{re.escape(prefix)}([0-9a-f]{{4}})-")
    gone = []
    for ns in namespaces():
        found = pattern.match(ns)
        if found and not _owner_alive(found.group(1)):
            _kill_all_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                           timeout=_CMD_TIMEOUT_S)
            gone.append(ns)
    return gone


def _kill_all_in(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, check=False,
                          timeout=_CMD_TIMEOUT_S).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Host:
    """One namespace with an address on the lab's bridge (or behind a NAT ``router``)."""

    lab: Lab
    name: str
    ns: str
    addr: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    router: Host | None = None

    def run(self, *argv: str, stdin: str | None = None) -> str:
        """Run a command in this host, bounded; its stdout."""
        return sh(*argv, ns=self.ns, stdin=stdin)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process in this host; the lab stops it when it closes."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.ns, *argv], **kwargs)
        self.procs.append(proc)
        return proc

    def nft(self, ruleset: str) -> None:
        """Load nft rules (``nft -f -`` syntax) into this host's own ruleset."""
        self.run("nft", "-f", "-", stdin=ruleset)

    def _table(self) -> None:
        self.nft(f"add table inet {NFT_TABLE}\n"
                 f"add chain inet {NFT_TABLE} out {{ type filter hook output priority 0; }}\n"
                 f"add chain inet {NFT_TABLE} in {{ type filter hook input priority 0; }}\n")

    def drop_udp(self, percent: float, direction: str = "out") -> None:
        """Drop ``percent`` % of this host's UDP at random (the kernel's numgen), one way."""
        if not 0 <= percent <= 100:
            raise ValueError("percent is 0..100")
        self._table()
        rules = f"flush chain inet {NFT_TABLE} {direction}\n"
        share = round(percent * 100)  # in 1/10000ths
        if share >= 10000:
            rules += f"add rule inet {NFT_TABLE} {direction} meta l4proto udp drop\n"
        elif share > 0:
            rules += (f"add rule inet {NFT_TABLE} {direction} meta l4proto udp "
                      f"numgen random mod 10000 < {share} drop\n")
        self.nft(rules)

    def partition(self) -> None:
        """Cut this host off: nothing in or out except its own loopback."""
        self._table()
        self.nft(f"flush chain inet {NFT_TABLE} out\nflush chain inet {NFT_TABLE} in\n"
                 f"add rule inet {NFT_TABLE} out oifname != \"lo\" drop\n"
                 f"add rule inet {NFT_TABLE} in iifname != \"lo\" drop\n")

    def heal(self) -> None:
        """Remove every rule the lab put in this host."""
        with contextlib.suppress(RuntimeError):
            self.run("nft", "delete", "table", "inet", NFT_TABLE)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process in this host at once (a host lost)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        _kill_all_in(self.ns)


class Lab:
    """A bridge and hosts on it, all in namespaces of their own; a context manager."""

    def __init__(self, subnet_octet: int | None = None) -> None:
        reason = why_unavailable()
        if reason:
            raise LabUnavailable(reason)
        sweep()
        taken = {ns[len(PREFIX):len(PREFIX) + 4] for ns in namespaces()}
        self.id = next(i for i in iter(lambda: secrets.token_hex(2), None) if i not in taken)
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.id).write_text(str(os.getpid()))
        # 10.231.<n>.0/24: a subnet per lab so two labs at once never share addresses.
        self.octet = subnet_octet if subnet_octet is not None else int(self.id, 16) % 250 + 1
        self.bridge_ns = f"{PREFIX}{self.id}-br"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        self._closed = False

    def _ns(self, name: str) -> str:
        ns = f"{PREFIX}{self.id}-{name}"
        sh("ip", "netns", "add", ns)
        self._made.append(ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        return ns

    def __enter__(self) -> Lab:
        try:
            self._ns("br")
            sh("ip", "link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
            sh("ip", "link", "set", "br0", "up", ns=self.bridge_ns)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def host(self, name: str) -> Host:
        """A new host on the bridge, with the next free address."""
        if not re.fullmatch(r"[a-z0-9]{1,6}", name) or name == "br" or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        ns = self._ns(name)
        addr = f"10.231.{self.octet}.{len(self.hosts) + 1}"
        outside, inside = f"v{self.id}{name}", "eth0"
        # Both ends are made in the bridge's namespace, then one moves into the host.
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside,
           "netns", ns, ns=self.bridge_ns)
        sh("ip", "link", "set", outside, "master", "br0", ns=self.bridge_ns)
        sh("ip", "link", "set", outside, "up", ns=self.bridge_ns)
        sh("ip", "addr", "add", f"{addr}/24", "dev", inside, ns=ns)
        sh("ip", "link", "set", inside, "up", ns=ns)
        host = Host(self, name, ns, addr)
        self.hosts[name] = host
        return host

    def behind_nat(self, name: str, router: Host, *, one_to_one: bool = False,
                   udp: bool = True) -> Host:
        """A host on a private link of its own behind ``router`` (a bridge host), which
        forwards and NATs for it. By default MASQUERADE: out as ``router.addr``, replies
        in, unsolicited inbound dropped. ``one_to_one``: everything sent to
        ``router.addr`` goes to this host (ports kept) and it leaves as ``router.addr``
        (a cloud VM's 1:1 NAT). ``udp=False``: the router forwards no UDP at all (a
        network that allows only TCP out)."""
        if not re.fullmatch(r"[a-z0-9]{1,6}", name) or name == "br" or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        n = sum(1 for h in self.hosts.values() if h.router is not None)
        ns = self._ns(name)
        net = f"10.{232 + n}.{self.octet}"
        lan = f"lan{n}"
        sh("ip", "link", "add", lan, "type", "veth", "peer", "name", "eth0", "netns", ns,
           ns=router.ns)
        sh("ip", "addr", "add", f"{net}.1/24", "dev", lan, ns=router.ns)
        sh("ip", "link", "set", lan, "up", ns=router.ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router.ns)
        sh("ip", "addr", "add", f"{net}.2/24", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", f"{net}.1", ns=ns)
        inside = f"{net}.2"
        if one_to_one:
            nat = (f'add rule ip {NFT_TABLE}nat{n} dnat_in iifname "eth0" '
                   f"ip daddr {router.addr} dnat to {inside}\n"
                   f'add rule ip {NFT_TABLE}nat{n} snat_out ip saddr {inside} oifname "eth0" '
                   f"snat to {router.addr}\n")
            forward = ""
        else:
            nat = f'add rule ip {NFT_TABLE}nat{n} snat_out oifname "eth0" masquerade\n'
            forward = (f"add rule ip {NFT_TABLE}nat{n} sieve ct state established,related "
                       "accept\n"
                       f'add rule ip {NFT_TABLE}nat{n} sieve iifname "eth0" oifname "{lan}" '
                       "drop\n")
        if not udp:
            forward = f"add rule ip {NFT_TABLE}nat{n} sieve meta l4proto udp drop\n" + forward
        router.nft(f"add table ip {NFT_TABLE}nat{n}\n"
                   f"add chain ip {NFT_TABLE}nat{n} dnat_in "
                   "{ type nat hook prerouting priority -100; }\n"
                   f"add chain ip {NFT_TABLE}nat{n} snat_out "
                   "{ type nat hook postrouting priority 100; }\n"
                   f"add chain ip {NFT_TABLE}nat{n} sieve "
                   "{ type filter hook forward priority 0; }\n" + nat + forward)
        host = Host(self, name, ns, inside, router=router)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Stop every process, then delete every namespace this lab made (veths go with
        them). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            for proc in host.procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            for proc in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
        for ns in reversed(self._made):
            _kill_all_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                           timeout=_CMD_TIMEOUT_S)
        with contextlib.suppress(OSError):
            (OWNERS / self.id).unlink()
        for host in self.hosts.values():
            for proc in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """``with lab() as l:`` — a Lab, closed whatever happens."""
    with Lab() as made:
        yield made


# Run inside a lab host: wait (bounded) until `townhall serve` at argv[1] is healthy, then
# open a live Space titled argv[2] as a guest host; prints its id, token and identity.
LIVE_SPACE = """
import json, sys, time
import httpx
url, title, bound_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + bound_s
while True:
    try:
        if httpx.get(url + "/healthz", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"not healthy within {bound_s:g} s")
    time.sleep(0.2)
who = httpx.post(url + "/api/v1/sessions", json={"name": "Ada"}, timeout=10).json()
auth = {"Authorization": "Bearer " + who["token"]}
space = httpx.post(url + "/api/v1/spaces", json={"title": title}, headers=auth,
                   timeout=10).json()["id"]
httpx.post(url + f"/api/v1/spaces/{space}/start", headers=auth, timeout=10).raise_for_status()
print(json.dumps({"space": space, "token": who["token"], "identity": who["identity"]}))
"""


def live_space(host: Host, url: str, title: str, *, bound_s: float = 60,
               log: Path | None = None) -> dict[str, str]:
    """Seen from ``host``: the server at ``url`` healthy (within ``bound_s``) and a live
    Space on it; {"space", "token", "identity"}. ``log`` (the server's) is shown on failure."""
    proc = host.popen([sys.executable, "-c", LIVE_SPACE, url, title, str(bound_s)], cwd=ROOT,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=bound_s + 30)
    text = (out or b"").decode(errors="replace")
    served = log.read_text(errors="replace")[-3000:] if log is not None else ""
    assert proc.returncode == 0, text + served
    found: dict[str, str] = json.loads(text.strip().splitlines()[-1])
    return found
