"""Issue 13, the front door: a few sockets must not hold the HTTP server or the edge.

Real `townhall serve` processes (api + edge on the session's nats-server), real sockets
(raw where the probe needs bytes no well-behaved client sends), a real chunk producer.
Each test failed before the guards it probes were added (edge/guard.py, edge/handoff.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from tests.conftest import Served, start_townhall
from tests.edges import Listener, Producer, live_space, metric, ws_base
from townhall.bus import Bus, NatsBus, subjects
from townhall.media.chunk import Chunk

pytestmark = pytest.mark.timeout(240)

HEADER_TIMEOUT_S = 3


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await NatsBus.connect([nats_url])
    yield b
    await b.close()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Served]:
    """An api + edge process with a short header timeout and a small replay budget."""
    served = start_townhall(tmp_path_factory.mktemp("front"), "--nats", nats_url,
                            "--roles", "api,edge",
                            env={"TOWNHALL_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                                 "TOWNHALL_EDGE_REPLAY_BURST": "2",
                                 "TOWNHALL_EDGE_REPLAY_RATE": "0.01"})
    yield served
    served.stop()


def address(served: Served) -> tuple[str, int]:
    host, port = served.url.removeprefix("http://").split(":")
    return host, int(port)


def ogg_socket(served: Served, space: str, forwarded_for: str,
               rcvbuf: int | None = None) -> socket.socket:
    """A raw Ogg listener request for a client at ``forwarded_for``, as a reverse proxy on
    this machine would send it (loopback clients themselves are not counted per address:
    a same-host proxy not configured as trusted would otherwise be one address)."""
    host, port = address(served)
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect((host, port))
    s.sendall(f"GET /listen/{space}.opus HTTP/1.1\r\nHost: {host}\r\n"
              f"X-Forwarded-For: {forwarded_for}\r\n\r\n".encode())
    return s


def response_head(s: socket.socket) -> bytes:
    """The response's status line and headers, read a byte at a time (nothing more)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = s.recv(1)
        if not byte:
            break
        head += byte
    return head


async def test_urllib_posting_5_mb_reads_the_413_instead_of_a_reset(front: Served) -> None:
    """urllib sends the whole body (with Connection: close) before it reads: the server
    must not close with that body unread (a reset), but linger and drain."""

    def post() -> tuple[int, str, dict[str, object]]:
        req = urllib.request.Request(f"{front.url}/api/v1/sessions", data=b"x" * 5_000_000,
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["content-type"], json.loads(exc.read())
        raise AssertionError("a 5 MB body was accepted")

    for _ in range(3):
        status, ctype, body = await asyncio.to_thread(post)
        assert status == 413 and ctype == "application/problem+json"
        assert body["type"] == "/problems/too-large"


async def test_slowloris_sockets_are_closed_while_requests_and_listeners_go_on(
        front: Served, bus: Bus) -> None:
    space, _ = live_space(front, "slowloris")
    producer = Producer(bus, space)
    producer.start()
    host, port = address(front)
    connected = 0
    all_in = asyncio.Event()

    async def slowloris() -> None:
        """Send a request head one header line every half second, never finishing it;
        return once the server has closed the connection."""
        nonlocal connected
        reader, writer = await asyncio.open_connection(host, port)
        connected += 1
        if connected == 200:
            all_in.set()
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while True:
                try:
                    if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                        return
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    try:
        listener = await Listener.open(f"{ws_base(front)}/ws/{space}")
        held = [asyncio.ensure_future(slowloris()) for _ in range(200)]
        await asyncio.wait_for(all_in.wait(), 30)
        # Meanwhile a normal request and a new listener are served...
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{front.url}/healthz")).status_code == 200
        newcomer = await Listener.open(f"{ws_base(front)}/ws/{space}")
        await newcomer.until(producer.last + 3, timeout=30)
        # ...and every slowloris socket is closed by the server (header timeout 3 s).
        async with asyncio.timeout(HEADER_TIMEOUT_S + 30):
            await asyncio.gather(*held)
        assert await metric(front, "townhall_http_guard_closes_total") >= 200
        await listener.until(producer.last + 3, timeout=30)  # never disturbed
        for x in (listener, newcomer):
            await x.ws.close()
    finally:
        await producer.stop()


def ws_handshake(served: Served, space: str) -> socket.socket:
    host, port = address(served)
    s = socket.create_connection((host, port), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws/{space} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert response_head(s).startswith(b"HTTP/1.1 101")
    return s


def read_frames(s: socket.socket, until_close: bool = True) -> list[WsFrame]:
    """Server frames (unmasked) until a close frame, EOF or a reset."""
    buf = b""
    frames: list[WsFrame] = []
    while True:
        try:
            data = s.recv(65536)
        except (ConnectionError, TimeoutError):
            data = b""
        buf += data
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                n, at = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                n, at = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < at + n:
                break
            frames.append(WsFrame(Opcode(buf[0] & 0x0F), buf[at:at + n]))
            buf = buf[at + n:]
            if until_close and frames[-1].opcode is Opcode.CLOSE:
                return frames
        if not data:
            return frames


async def test_a_ping_flood_is_metered_and_closed_1008_with_bounded_memory(
        front: Served) -> None:
    space, _ = live_space(front, "pings")
    rss0 = await metric(front, "process_resident_memory_bytes")
    s = ws_handshake(front, space)
    ping = WsFrame(Opcode.PING, b"p" * 125).serialize(mask=True)
    s.sendall(ping * 30)   # past the client message budget (20 at once, then 5/s)
    frames = await asyncio.to_thread(read_frames, s)
    pongs = [f for f in frames if f.opcode is Opcode.PONG]
    assert frames[-1].opcode is Opcode.CLOSE, [f.opcode for f in frames]
    assert int.from_bytes(frames[-1].data[:2], "big") == 1008
    assert len(pongs) <= 20
    # Flooding on (52 MB once grew the server by 45 MB) is cut off, not answered.
    sent = 0

    def flood() -> int:
        nonlocal sent
        burst = ping * 8192   # ~1 MiB
        try:
            while sent < 52_000_000:
                s.sendall(burst)
                sent += len(burst)
        except OSError:
            pass
        return sent

    assert await asyncio.to_thread(flood) < 52_000_000
    s.close()
    assert await metric(front, "process_resident_memory_bytes") - rss0 < 20_000_000


async def test_anonymous_joins_from_far_back_do_not_each_replay_from_jetstream(
        front: Served, bus: Bus) -> None:
    space, _ = live_space(front, "replays")
    producer = Producer(bus, space)
    watcher = await Listener.open(f"{ws_base(front)}/ws/{space}")
    await producer.publish(150, gap=0.01)   # more than the ring's 100 chunks
    await watcher.until(150)
    before = {o: await metric(front, f'townhall_edge_replays_total{{outcome="{o}"}}')
              for o in ("replayed", "shared", "refused")}
    hellos = []
    for _ in range(40):
        joiner = await Listener.open(f"{ws_base(front)}/ws/{space}?from=1")
        hellos.append(joiner.hello)
        # gone without reading its catch-up (a clean close would wait for all of it)
        joiner.ws.transport.abort()
    after = {o: await metric(front, f'townhall_edge_replays_total{{outcome="{o}"}}')
             for o in before}
    spent = {o: after[o] - before[o] for o in before}
    assert sum(spent.values()) == 40            # every one of them needed JetStream...
    assert spent["replayed"] <= 3               # ...but the budget (2, +0.01/s) replayed
    assert spent["refused"] >= 37
    # the refused ones start from what the edge holds, and are told they did not resume
    assert sum(1 for h in hellos if h["resumed"] is False) >= 37
    assert all(h["from"] is None or h["from"] > 1 for h in hellos if not h["resumed"])
    await watcher.ws.close()


def metric_sync(served: Served, name: str) -> float:
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


async def test_one_address_cannot_fill_the_edge_and_its_never_reading_sockets_are_dropped(
        tmp_path_factory: pytest.TempPathFactory, nats_url: str, bus: Bus) -> None:
    """50 Ogg sockets that never read, from one address, once filled a capacity-50 edge
    and kept everyone else out. Now that address holds at most 12 (a quarter), others get
    in, and its sockets that never read are closed once their backlog overflows.

    The clients come through a reverse proxy trusted from 127.0.0.1 (uvicorn's
    ``FORWARDED_ALLOW_IPS``): the address counted is the forwarded one."""
    served = start_townhall(tmp_path_factory.mktemp("per-address"), "--nats", nats_url,
                            "--roles", "api,edge", env={"TOWNHALL_EDGE_CAPACITY": "50",
                                                        "FORWARDED_ALLOW_IPS": "127.0.0.1"})
    socks: list[socket.socket] = []
    try:
        space, _ = live_space(served, "one address")
        heads = []
        for _ in range(50):
            socks.append(ogg_socket(served, space, "203.0.113.7", rcvbuf=4096))
            heads.append(response_head(socks[-1]).lower())
        streaming = [s for s, h in zip(socks, heads, strict=True)
                     if h.startswith(b"http/1.1 200")]
        refused = [h for h in heads if h.startswith(b"http/1.1 429")]
        assert len(streaming) == 12 and len(refused) == 38
        assert all(b"retry-after: " in h for h in refused)
        # Someone else (another address) still gets in.
        other = ogg_socket(served, space, "203.0.113.8")
        assert response_head(other).startswith(b"HTTP/1.1 200")
        other.close()
        # The 12 never read: once their buffers and backlogs are full they are closed,
        # and the address may hold listeners again.
        closes0 = metric_sync(served, "townhall_edge_slow_closes_total")
        seq = 0
        async with asyncio.timeout(120):
            while metric_sync(served, "townhall_edge_slow_closes_total") < closes0 + 12:
                for _ in range(25):
                    seq += 1
                    chunk = Chunk(seq=seq, pts=seq * 4800, sent_us=0,
                                  packets=tuple(bytes([seq % 251]) * 4000 for _ in range(5)))
                    await bus.publish(subjects.media(space), chunk.encode())
                    await asyncio.sleep(0.01)
        again: socket.socket | None = None
        async with asyncio.timeout(30):
            while again is None:
                s = ogg_socket(served, space, "203.0.113.7")
                if response_head(s).startswith(b"HTTP/1.1 200"):
                    again = s
                else:
                    s.close()
                    await asyncio.sleep(0.2)
        again.close()
    finally:
        for s in socks:
            s.close()
        served.stop()


async def test_a_per_process_connection_cap_answers_503_but_spares_listeners(
        tmp_path_factory: pytest.TempPathFactory, nats_url: str, bus: Bus) -> None:
    served = start_townhall(tmp_path_factory.mktemp("cap"), "--nats", nats_url,
                            "--roles", "api,edge", env={"TOWNHALL_MAX_CONNECTIONS": "20"})
    idle: list[socket.socket] = []
    producer: Producer | None = None
    try:
        space, _ = live_space(served, "cap")
        producer = Producer(bus, space)
        producer.start()
        listener = await Listener.open(f"{ws_base(served)}/ws/{space}")
        host, port = address(served)
        idle = [socket.create_connection((host, port), timeout=10) for _ in range(20)]
        answer = b""
        async with asyncio.timeout(30):
            while not answer.startswith(b"HTTP/1.1 503"):
                s = socket.create_connection((host, port), timeout=10)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await asyncio.to_thread(lambda s=s: s.recv(4096))  # type: ignore[misc]
                s.close()
        assert b"retry-after: " in answer.lower()
        assert b"/problems/too-many-connections" in answer
        # The listener already streaming is not one of the counted connections.
        await listener.until(producer.last + 5, timeout=30)
        for s in idle:
            s.close()
        async with asyncio.timeout(30), httpx.AsyncClient(timeout=10) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{served.url}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        await listener.ws.close()
    finally:
        if producer is not None:
            await producer.stop()
        for s in idle:
            s.close()
        served.stop()
