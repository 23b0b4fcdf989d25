"""The front door's budgets (edge/guard.py) and how the handoff protocol applies them:
per-address listener cap, connection cap, header timeout, lingering close, replay budget,
metered pings. Fake transports only; real sockets are in tests/security/."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from tests.fakebus import FakeBus
from tests.unit.test_edge_handoff import (
    LIVE,
    SPACE,
    Transport,
    asgi_app,
    edge,
    settle,
    upgrade,
    ws_frames,
)
from townhall.bus import Message
from townhall.closecode import CloseCode
from townhall.edge import guard
from townhall.edge.feed import Feed
from townhall.edge.gate import EdgeNode
from townhall.edge.guard import ConnectionCap, PerAddress, ReplayBudget, ReplayChoice
from townhall.edge.handoff import client_address, http_protocol
from townhall.edge.hub import Hub
from townhall.edge.subscriber import Subscriber
from townhall.edge.websocket import CLIENT_BURST, MAX_OWED, WsListener
from townhall.media.chunk import Chunk

PEER = "198.51.100.1"


def test_loopback_clients_are_not_counted_per_address() -> None:
    assert not guard.counted("127.0.0.1") and not guard.counted("127.0.0.2")
    assert not guard.counted("::1")
    assert guard.counted("198.51.100.1") and guard.counted("2001:db8::1")
    assert guard.counted("not-an-address")


def test_per_address_counts_each_address_and_forgets_it_at_zero() -> None:
    cap = PerAddress(2)
    assert cap.take("10.0.0.1") and cap.take("10.0.0.1")
    assert not cap.take("10.0.0.1")
    assert cap.take("10.0.0.2")           # another address is unaffected
    cap.release("10.0.0.1")
    assert cap.take("10.0.0.1") and not cap.take("10.0.0.1")
    for _ in range(2):
        cap.release("10.0.0.1")
    cap.release("10.0.0.2")
    assert len(cap) == 0 and cap.held("10.0.0.1") == 0   # no entry kept per address seen
    cap.release("10.0.0.9")               # releasing what was never taken is harmless
    assert len(cap) == 0
    with pytest.raises(ValueError):
        PerAddress(0)


def test_per_address_default_is_a_few_hundred_and_at_most_a_quarter_of_capacity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWNHALL_EDGE_PER_ADDRESS", raising=False)
    assert guard.per_address_from_env(5_000) == 250
    assert guard.per_address_from_env(50) == 12
    assert guard.per_address_from_env(2) == 1
    monkeypatch.setenv("TOWNHALL_EDGE_PER_ADDRESS", "40")
    assert guard.per_address_from_env(5_000) == 40
    monkeypatch.setenv("TOWNHALL_EDGE_PER_ADDRESS", "zero")
    with pytest.raises(ValueError):
        guard.per_address_from_env(5_000)


def test_connection_cap() -> None:
    cap = ConnectionCap(2)
    assert cap.take() and cap.take() and not cap.take()
    cap.release()
    assert cap.take() and cap.open == 2
    cap.release()
    cap.release()
    cap.release()
    assert cap.open == 0


def test_replay_budget_spends_tokens_shares_a_replay_in_flight_and_refills() -> None:
    budget = ReplayBudget(rate=1.0, burst=2, now=0.0)
    assert budget.choose(0.0, reach_back_to=100.0, in_flight_from=None) is ReplayChoice.REPLAY
    # A replay in flight from 100 covers a join that needs from 105, not one from 90.
    assert budget.choose(0.0, 105.0, 100.0) is ReplayChoice.SHARE
    assert budget.choose(0.0, 90.0, 100.0) is ReplayChoice.REPLAY
    assert budget.choose(0.0, 90.0, None) is ReplayChoice.LIVE       # budget empty
    assert budget.choose(0.0, 105.0, 100.0) is ReplayChoice.SHARE    # sharing is free
    assert budget.choose(1.0, 90.0, None) is ReplayChoice.REPLAY     # one token a second
    assert budget.choose(1.5, 90.0, None) is ReplayChoice.LIVE


def test_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_one() -> None:
    xff = [(b"x-forwarded-for", b"203.0.113.7, 10.0.0.5")]
    assert client_address("127.0.0.1", [], True, "127.0.0.1") == "127.0.0.1"
    # the proxy's own hop (10.0.0.5) is not trusted: it is the client, as uvicorn says
    assert client_address("127.0.0.1", xff, True, "127.0.0.1") == "10.0.0.5"
    assert client_address("127.0.0.1", xff, True, ["127.0.0.1", "10.0.0.0/8"]) \
        == "203.0.113.7"
    # an untrusted peer's header is ignored; so is every header without proxy headers
    assert client_address("198.51.100.1", xff, True, "127.0.0.1") == "198.51.100.1"
    assert client_address("127.0.0.1", xff, False, "127.0.0.1") == "127.0.0.1"
    assert client_address(None, xff, True, "*") is None


def connect(node: EdgeNode | None, **limits: Any) -> tuple[Any, EofTransport]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 413, "headers": [
                (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"no"})

    config = Config(app=app, http=http_protocol(node, **limits), log_config=None)
    config.load()
    proto = config.http_protocol_class(config=config, server_state=ServerState(),  # type: ignore[call-arg]
                                       app_state={})
    transport = EofTransport()
    transport.protocol = proto
    proto.connection_made(transport)
    return proto, transport


class EofTransport(Transport):
    """Also records half-closes."""

    def __init__(self) -> None:
        super().__init__()
        self.eof = False
        self.gone = asyncio.Event()

    def close(self) -> None:
        super().close()
        self.gone.set()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # a client from elsewhere (loopback clients are not counted per address)
        return {"sockname": ("192.0.2.1", 8080), "peername": (PEER, 5555)}.get(name, default)

    def resume_reading(self) -> None:
        pass


async def test_over_the_connection_cap_is_answered_503_with_retry_after_and_lingers() -> None:
    protocol = http_protocol(None, max_connections=2)
    first, _ = connect_with(protocol)
    connect_with(protocol)
    _, third = connect_with(protocol)
    head = bytes(third.written).split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503") and b"retry-after: " in head
    assert third.eof and not third.closed   # half-closed, reading what the client sent
    first.transport.close()
    await settle()
    _, fourth = connect_with(protocol)
    assert not fourth.written  # a slot came free


def connect_with(protocol: Any) -> tuple[Any, EofTransport]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(app=asgi_app, http=protocol, log_config=None)
    config.load()
    proto = config.http_protocol_class(config=config, server_state=ServerState(),  # type: ignore[call-arg]
                                       app_state={})
    transport = EofTransport()
    transport.protocol = proto
    proto.connection_made(transport)
    return proto, transport


async def test_a_request_head_not_complete_in_time_is_dropped() -> None:
    proto, transport = connect(None, header_timeout_s=0.05)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await asyncio.wait_for(transport.gone.wait(), 5)
    # and a complete head stops the clock
    proto, transport = connect(None, header_timeout_s=0.05)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)
    assert transport.written.startswith(b"HTTP/1.1 413") and not transport.closed


async def test_an_answer_before_the_body_lingers_instead_of_closing() -> None:
    proto, transport = connect(None)
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Length: 5000000\r\n\r\n" + b"a" * 1000)
    async with asyncio.timeout(5):
        while not transport.eof:
            await settle()
    assert transport.written.startswith(b"HTTP/1.1 413")
    assert not transport.closed         # still reading (and dropping) the body
    proto.data_received(b"a" * 100_000)
    assert not transport.closed
    proto.data_received(b"a" * (guard.LINGER_BYTES + 1))   # past the bound: closed
    assert transport.closed


async def test_listener_connections_past_the_per_address_cap_get_4429_and_429() -> None:
    node = edge(LIVE)
    node.per_address = PerAddress(1)
    proto, transport = connect_listener(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    assert node.per_address.held(PEER) == 1
    proto, second = connect_listener(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    close = ws_frames(bytes(second.written))[-1]
    assert close.opcode is Opcode.CLOSE
    assert int.from_bytes(close.data[:2], "big") == CloseCode.TOO_MANY
    assert json.loads(close.data[2:])["retry_after"] >= 1
    proto, ogg = connect_listener(node)
    proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await settle()
    assert ogg.written.startswith(b"HTTP/1.1 429")
    assert b"retry-after: " in bytes(ogg.written).lower()
    assert b"/problems/too-many-listeners" in ogg.written
    transport.close()   # the first one leaves: its address may join again
    await settle()
    assert node.per_address.held(PEER) == 0
    proto, again = connect_listener(node)
    proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await settle()
    assert again.written.startswith(b"HTTP/1.1 200")


def connect_listener(node: EdgeNode) -> tuple[Any, EofTransport]:
    return connect_with(http_protocol(node))


def ping(n: int = 1) -> bytes:
    return WsFrame(Opcode.PING, b"p" * 125).serialize(mask=True) * n


async def test_pings_count_against_the_client_message_budget() -> None:
    node = edge(LIVE)
    proto, transport = connect_listener(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    listener = transport.protocol
    listener.data_received(ping(int(CLIENT_BURST) - 1))
    frames = ws_frames(bytes(transport.written))
    assert [f.opcode for f in frames].count(Opcode.PONG) == CLIENT_BURST - 1
    listener.data_received(ping(50))
    frames = ws_frames(bytes(transport.written))
    # the rest of that read is not answered once the budget is spent
    assert [f.opcode for f in frames].count(Opcode.PONG) <= CLIENT_BURST
    assert frames[-1].opcode is Opcode.CLOSE
    assert int.from_bytes(frames[-1].data[:2], "big") == 1008
    size = len(transport.written)
    listener.data_received(ping(50))   # still flooding while we close: cut off
    assert transport.closed and len(transport.written) == size


async def test_protocol_bytes_a_client_does_not_read_are_bounded() -> None:
    node = edge(LIVE)
    proto, transport = connect_listener(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    listener: WsListener = transport.protocol
    listener.pause_writing()   # the client stopped reading
    listener.bucket = _Unlimited()  # type: ignore[assignment]  # every ping within the rate: only the bound is left
    sent = 0
    while not transport.closed and sent < 10_000:
        listener.data_received(ping())
        sent += 1
    assert transport.closed
    assert listener.owed <= MAX_OWED + 200
    frames = ws_frames(bytes(transport.written))
    assert int.from_bytes(frames[-1].data[:2], "big") == 1008


class _Unlimited:
    def take(self, now: float) -> bool:
        return True


class Replays(FakeBus):
    """A bus whose stream replay waits for the test and counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.gate = asyncio.Event()

    async def replay(self, stream: str, subject: str, *, since_s: float,
                     limit: int = 1000, timeout: float = 2.0) -> list[Message]:
        self.calls += 1
        await self.gate.wait()
        return [Message(subject, Chunk(seq=s, pts=0, sent_us=0, packets=(b"\xf8",)).encode(), {})
                for s in range(1, 11)]


async def test_joins_needing_jetstream_share_one_replay_and_past_the_budget_start_live(
        ) -> None:
    bus = Replays()
    hub = Hub(bus, replays=ReplayBudget(rate=0.001, burst=1, now=0.0))
    feed = Feed(SPACE, hub.ogg)
    hub.feeds[SPACE] = feed
    joins = [asyncio.ensure_future(hub.join(SPACE, Subscriber("ws"), 1)) for _ in range(30)]
    await settle()
    bus.gate.set()
    joined = await asyncio.gather(*joins)
    assert bus.calls == 1 and all(j.resumed and j.start == 1 for j in joined)
    # the ring holds 1..10 now; a join from before it needs JetStream, and the budget
    # (one token) is spent: it starts from what the edge holds, and says so
    for seq in range(11, 160):
        feed.on_media(Chunk(seq=seq, pts=0, sent_us=0, packets=(b"\xf8",)).encode())
    late = Subscriber("ws")
    got = await hub.join(SPACE, late, 5)
    assert bus.calls == 1 and got.resumed is False
    assert any('"busy"' in t for t in late.texts)
