"""A user-space impairment relay: delay, jitter, reordering, random and bursty loss and a
bandwidth cap on real datagrams (this kernel has no ``sch_netem``).

Two parts, as everywhere in townhall:

- ``Channel`` decides, with no I/O, what happens to each datagram offered at time ``now``:
  dropped, or delivered at a later time. Seeded, so a condition is the same every run.
- ``Relay`` is the thin asyncio shell: a 1:1 "NAT" for UDP. It listens on a range of ports
  of its own address and forwards each client's datagrams to the same port of the target,
  from a socket of its own per client, and the answers back; every datagram crosses a
  ``Channel`` (one per direction). A stage started with ``--public-ip <relay address>`` and
  ``--rtc-ports`` equal to the relay's range is reached only through it.

Run in a namespace host (tests/netlab.py)::

    python -m tests.impair --listen 10.231.7.3 --target 10.231.7.2 --ports 40000-40009 \\
        --delay 40 --jitter 20 --loss 5 --stats /tmp/relay.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast


@dataclass(frozen=True)
class Impairment:
    """One direction's condition. Times in milliseconds, probabilities 0..1."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0        # uniform in ±jitter; packets may overtake (reorder)
    reorder: bool = True          # False: jittered, but never delivered out of order
    loss: float = 0.0             # independent random loss
    ge_p: float = 0.0             # Gilbert-Elliott: P(good -> bad) per packet
    ge_r: float = 1.0             #                  P(bad -> good) per packet
    ge_loss_bad: float = 1.0      #                  loss while bad (good state loses `loss`)
    rate_kbps: float = 0.0        # bottleneck (0 = none); drop-tail past queue_ms of backlog
    queue_ms: float = 200.0
    spike_every_s: float = 0.0    # a delay spike every N s (0 = none) ...
    spike_ms: float = 0.0         # ... holding everything sent during it until it ends

    def __post_init__(self) -> None:
        for name in ("loss", "ge_p", "ge_r", "ge_loss_bad"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability (0..1)")
        if min(self.delay_ms, self.jitter_ms, self.rate_kbps, self.queue_ms,
               self.spike_every_s, self.spike_ms) < 0:
            raise ValueError("times and rates are never negative")
        if self.jitter_ms > self.delay_ms:
            raise ValueError("jitter cannot exceed the delay (a packet would arrive early)")


@dataclass
class Counters:
    """What a channel did, for reports next to the stage's own counters."""

    offered: int = 0
    delivered: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    lost_queue: int = 0
    reordered: int = 0


@dataclass
class Channel:
    """The fate of each datagram in one direction: ``offer`` returns when it is delivered,
    or None when it is lost. Time is passed in (seconds, any monotonic origin)."""

    cond: Impairment
    seed: int = 0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bad = False
        self._link_free = 0.0       # when the bottleneck finishes what it holds
        self._last_due = 0.0        # latest delivery time handed out (for FIFO / reorder)
        self._origin: float | None = None

    def offer(self, size: int, now: float) -> float | None:
        """A datagram of ``size`` bytes sent at ``now``: its delivery time, or None."""
        c, n = self.cond, self.counters
        n.offered += 1
        if self._origin is None:
            self._origin = now
        if self._lost():
            return None
        depart = now
        if c.rate_kbps > 0:
            backlog_s = max(0.0, self._link_free - now)
            if backlog_s * 1000 > c.queue_ms:
                n.lost_queue += 1
                return None
            depart = max(now, self._link_free) + size * 8 / (c.rate_kbps * 1000)
            self._link_free = depart
        due = depart + (c.delay_ms + self._rng.uniform(-c.jitter_ms, c.jitter_ms)) / 1000
        due = max(due, self._spike_end(now))
        if not c.reorder:
            due = max(due, self._last_due)
        if due < self._last_due:
            n.reordered += 1
        self._last_due = max(self._last_due, due)
        n.delivered += 1
        return due

    def _lost(self) -> bool:
        c, n = self.cond, self.counters
        if c.ge_p > 0:
            # Step the two-state chain once per packet, then lose by the state's rate.
            self._bad = (self._rng.random() >= c.ge_r) if self._bad \
                else (self._rng.random() < c.ge_p)
            if self._bad and self._rng.random() < c.ge_loss_bad:
                n.lost_burst += 1
                return True
        if c.loss > 0 and self._rng.random() < c.loss:
            n.lost_random += 1
            return True
        return False

    def _spike_end(self, now: float) -> float:
        """While a spike lasts, nothing is delivered before it ends."""
        c = self.cond
        if c.spike_every_s <= 0 or c.spike_ms <= 0 or self._origin is None:
            return 0.0
        period = c.spike_every_s
        cycle = self._origin + ((now - self._origin) // period) * period
        start = cycle + period - c.spike_ms / 1000
        return start + c.spike_ms / 1000 if start <= now else 0.0


class _Upstream(asyncio.DatagramProtocol):
    """The relay's own socket towards the target for one client on one port."""

    def __init__(self, relay: Relay, front: asyncio.DatagramTransport,
                 client: tuple[str, int]) -> None:
        self.relay, self.front, self.client = relay, front, client
        self.transport: asyncio.DatagramTransport | None = None
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.used = time.monotonic()
        self.relay.forward(self.relay.down, data, self.front, self.client)


class _Front(asyncio.DatagramProtocol):
    """The relay's listening socket on one port."""

    def __init__(self, relay: Relay, port: int) -> None:
        self.relay, self.port = relay, port
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: dict[tuple[str, int], _Upstream] = {}
        self.opening: set[asyncio.Task[None]] = set()
        self.pending: dict[tuple[str, int], list[bytes]] = {}  # while its socket opens

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        up = self.peers.get(client)
        if up is None:
            if client not in self.pending:
                self.pending[client] = [data]
                task = asyncio.ensure_future(self._open(client))
                self.opening.add(task)
                task.add_done_callback(self.opening.discard)
            else:
                self.pending[client].append(data)
            return
        up.used = time.monotonic()
        if up.transport is not None:
            self.relay.forward(self.relay.up, data, up.transport, None)

    async def _open(self, client: tuple[str, int]) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        up = _Upstream(self.relay, self.transport, client)
        await loop.create_datagram_endpoint(
            lambda: up, local_addr=(self.relay.listen, 0),
            remote_addr=(self.relay.target, self.port))
        self.peers[client] = up
        for data in self.pending.pop(client, []):
            if up.transport is not None:
                self.relay.forward(self.relay.up, data, up.transport, None)


@dataclass
class Relay:
    """A 1:1 UDP NAT from ``listen``:ports to ``target``:same ports, impaired both ways."""

    listen: str
    target: str
    ports: range
    up: Channel                 # client -> target (e.g. a speaker's uplink)
    down: Channel               # target -> client
    fronts: list[_Front] = field(default_factory=list)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            front = _Front(self, port)
            await loop.create_datagram_endpoint(lambda f=front: f,  # type: ignore[misc]
                                                local_addr=(self.listen, port))
            self.fronts.append(front)

    def forward(self, channel: Channel, data: bytes, out: asyncio.DatagramTransport,
                to: tuple[str, int] | None) -> None:
        loop = asyncio.get_running_loop()
        due = channel.offer(len(data), loop.time())
        if due is None:
            return
        if to is None:
            loop.call_at(due, out.sendto, data)
        else:
            loop.call_at(due, out.sendto, data, to)

    def close(self) -> None:
        for front in self.fronts:
            for up in front.peers.values():
                if up.transport is not None:
                    up.transport.close()
            if front.transport is not None:
                front.transport.close()

    def stats(self) -> dict[str, dict[str, int]]:
        return {"up": asdict(self.up.counters), "down": asdict(self.down.counters)}


def _ports(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def _impairment(args: argparse.Namespace, prefix: str) -> Impairment:
    def get(name: str) -> float:
        value = getattr(args, f"{prefix}{name}")
        return float(value)

    return Impairment(delay_ms=get("delay"), jitter_ms=get("jitter"),
                      reorder=not args.fifo, loss=get("loss") / 100,
                      ge_p=get("ge_p"), ge_r=get("ge_r"),
                      rate_kbps=get("rate"), queue_ms=args.queue,
                      spike_every_s=get("spike_every"), spike_ms=get("spike"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.impair", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--ports", required=True, help="LOW-HIGH, same on both sides")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fifo", action="store_true", help="jitter without reordering")
    p.add_argument("--queue", type=float, default=200.0, help="bottleneck queue, ms")
    p.add_argument("--stats", default="", help="write counters here (JSON) on exit")
    for prefix, who in (("", "client -> target"), ("down_", "target -> client")):
        for name, default, what in (("delay", 0.0, "ms"), ("jitter", 0.0, "± ms"),
                                    ("loss", 0.0, "% random"), ("ge_p", 0.0, "GE p"),
                                    ("ge_r", 1.0, "GE r"), ("rate", 0.0, "kbit/s"),
                                    ("spike_every", 0.0, "s"), ("spike", 0.0, "ms")):
            p.add_argument(f"--{prefix}{name}".replace("_", "-"), dest=f"{prefix}{name}",
                           type=float, default=default, help=f"{who}: {what}")
    args = p.parse_args(argv)
    relay = Relay(args.listen, args.target, _ports(args.ports),
                  Channel(_impairment(args, ""), args.seed),
                  Channel(_impairment(args, "down_"), args.seed + 1))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await relay.start()
        print("relay ready", flush=True)
        await stop.wait()
        relay.close()

    asyncio.run(run())
    if args.stats:
        Path(args.stats).write_text(json.dumps(relay.stats()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
