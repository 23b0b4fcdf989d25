"""uvicorn's HTTP protocol hands listener requests to the edge's raw protocols (and only
those); the raw protocols answer, stream and shut down as docs/protocol.md says.

Runs the installed uvicorn's HttpToolsProtocol subclass against a transport that records
what is written; the edge's Space is an open feed with its KV entry cached, so no NATS."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from tests.fakebus import FakeBus
from tests.snapshots import BASE
from tests.unit.test_edge_fastset import parse_ws
from townhall.auth import TokenIssuer
from townhall.bus import Entry
from townhall.edge.feed import Feed
from townhall.edge.gate import EdgeNode
from townhall.edge.handoff import http_protocol, listen_request
from townhall.edge.hub import Hub
from townhall.edge.ogghttp import OggListener
from townhall.edge.websocket import WsListener
from townhall.media.chunk import Chunk
from townhall.room.snapshot import from_doc

SPACE = "spaceone01"


class Transport(asyncio.Transport):
    """Records writes and the protocol it is handed to; closes when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.protocol: Any = None
        self.closed = False
        self.limits: tuple[int, int] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high or 0, low or 0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(
            name, default)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def edge(snapshot: dict[str, Any] | None = None) -> EdgeNode:
    hub = Hub(FakeBus())  # its KV holds nothing: an unknown Space
    if snapshot is not None:
        feed = Feed(SPACE, hub.ogg)
        feed.on_doc(json.dumps(snapshot).encode(), asyncio.get_running_loop().time())
        feed.on_state(from_doc(snapshot))
        hub.feeds[SPACE] = feed
    return EdgeNode(hub=hub, issuer=TokenIssuer(b"k" * 32), node="e1", url=None,
                    capacity=10, join_rate=100.0)


LIVE = {**BASE, "id": SPACE, "state": "live", "version": 3, "private": False}


def connect(node: EdgeNode) -> tuple[HttpToolsProtocol, Transport, ServerState]:
    config = Config(app=asgi_app, http=http_protocol(node), log_config=None)
    config.load()
    state = ServerState()
    proto = config.http_protocol_class(config=config, server_state=state,  # type: ignore[call-arg]
                                       app_state={})
    transport = Transport()
    transport.protocol = proto
    proto.connection_made(transport)
    return proto, transport, state  # type: ignore[return-value]


def upgrade(target: str) -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    return (f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def ws_frames(written: bytes) -> list[WsFrame]:
    head, _, rest = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return parse_ws(rest)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_only_get_on_the_listener_paths_is_a_listener_request() -> None:
    r = listen_request("ws", "GET", b"/ws/abc?from=5&token=t&from=9", [], "1.1")
    assert r is not None and r.space == "abc" and r.query == {"from": "5", "token": "t"}
    o = listen_request("ogg", "GET", b"/listen/abc.opus", [], "1.0")
    assert o is not None and o.space == "abc" and o.http_version == "1.0"
    assert listen_request("ogg", "HEAD", b"/listen/abc.opus", [], "1.1") is None
    assert listen_request("ws", "GET", b"/ws/a/b", [], "1.1") is None
    assert listen_request("ogg", "GET", b"/listen/abc.ogg", [], "1.1") is None
    assert listen_request("ws", "GET", b"/api/v1/spaces", [], "1.1") is None
    for odd in (b"/ws/a.b", b"/ws/%3E", b"/ws/*", b"/ws/" + b"a" * 65):
        assert listen_request("ws", "GET", odd, [], "1.1") is None


async def test_ws_upgrade_is_handed_over_hello_then_state_then_chunks() -> None:
    node = edge(LIVE)
    proto, transport, state = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    listener = transport.protocol
    assert isinstance(listener, WsListener) and listener in state.connections
    assert proto not in state.connections and transport.limits is not None
    await settle()
    feed = node.hub.feeds[SPACE]
    feed.on_media(Chunk(seq=7, pts=0, sent_us=0, packets=(b"\xf8",)).encode())
    frames = ws_frames(bytes(transport.written))
    hello, st = (json.loads(f.data) for f in frames[:2])
    assert hello["type"] == "hello" and hello["space"] == SPACE and not hello["resumed"]
    assert st["type"] == "state" and st["snapshot"]["version"] == 3
    assert frames[2].opcode is Opcode.BINARY and Chunk.decode(frames[2].data).seq == 7
    assert listener.sub is not None and listener.sub in feed.fast["ws"]
    assert node.joining == 0 and node.hub.listeners() == 1


async def test_ogg_get_is_handed_over_with_header_pages_first() -> None:
    node = edge(LIVE)
    proto, transport, _state = connect(node)
    proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert isinstance(transport.protocol, OggListener)
    await settle()
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    assert b"content-type: audio/ogg" in head
    size, _, rest = body.partition(b"\r\n")
    assert rest.startswith(b"OggS") and int(size, 16) == len(node.hub.ogg.headers)


async def test_everything_else_stays_on_asgi() -> None:
    node = edge(LIVE)
    proto, transport, state = connect(node)
    proto.data_received(b"GET /api/v1/spaces HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert transport.protocol is proto and proto in state.connections
    assert bytes(transport.written).startswith(b"HTTP/1.1 204")


async def test_refusals_unknown_space_bad_from_and_full() -> None:
    node = edge(None)
    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    close = ws_frames(bytes(transport.written))[-1]
    assert close.opcode is Opcode.CLOSE and int.from_bytes(close.data[:2], "big") == 4404

    proto, transport, _ = connect(node)
    proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await settle()
    assert bytes(transport.written).startswith(b"HTTP/1.1 404")
    assert b"application/problem+json" in transport.written and transport.closed

    node = edge(LIVE)
    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}?from=abc"))
    assert bytes(transport.written).startswith(b"HTTP/1.1 400") and transport.closed

    node.capacity = node.admission.capacity = 0
    proto, transport, _ = connect(node)
    proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await settle()
    assert bytes(transport.written).startswith(b"HTTP/1.1 503")
    assert b"Retry-After: " in transport.written


async def test_shutdown_closes_ws_with_1001_and_ends_the_ogg_stream() -> None:
    node = edge(LIVE)
    ws_proto, ws_t, state = connect(node)
    ws_proto.data_received(upgrade(f"/ws/{SPACE}"))
    ogg_proto, ogg_t, _ = connect(node)
    ogg_proto.data_received(f"GET /listen/{SPACE}.opus HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await settle()
    ws_t.protocol.shutdown()
    ogg_t.protocol.shutdown()
    close = ws_frames(bytes(ws_t.written))[-1]
    assert close.opcode is Opcode.CLOSE and int.from_bytes(close.data[:2], "big") == 1001
    assert bytes(ogg_t.written).endswith(b"0\r\n\r\n") and ogg_t.closed
    # the client answers the close: the connection ends and leaves the feed
    ws_t.protocol.data_received(WsFrame(Opcode.CLOSE, close.data).serialize(mask=True))
    await settle()
    assert ws_t.closed and node.hub.listeners() == 0 and not state.connections


async def test_pause_and_resume_writing_reach_the_fast_set() -> None:
    node = edge(LIVE)
    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    feed, listener = node.hub.feeds[SPACE], transport.protocol
    listener.pause_writing()
    assert listener.sub in feed.slow
    feed.on_media(Chunk(seq=1, pts=0, sent_us=0, packets=(b"\xf8",)).encode())
    assert len(listener.sub.backlog) == 1
    listener.resume_writing()
    assert listener.sub in feed.fast["ws"] and not len(listener.sub.backlog)


async def test_client_ping_oversized_and_flooding_messages() -> None:
    node = edge(LIVE)
    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    listener = transport.protocol
    listener.data_received(WsFrame(Opcode.TEXT, b'{"type": "ping"}').serialize(mask=True))
    listener.data_received(WsFrame(Opcode.TEXT, b'{"type": "react", "emoji": "\xf0\x9f\x91\x8f"}'
                                   ).serialize(mask=True))
    frames = ws_frames(bytes(transport.written))
    assert json.loads(frames[-1].data) == {"type": "pong"}
    assert sum(node.hub.feeds[SPACE].reactions.values()) == 1
    listener.data_received(WsFrame(Opcode.TEXT, b"x" * 5000).serialize(mask=True))
    close = ws_frames(bytes(transport.written))[-1]
    assert close.opcode is Opcode.CLOSE and int.from_bytes(close.data[:2], "big") == 1009

    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    for _ in range(40):
        transport.protocol.data_received(
            WsFrame(Opcode.TEXT, b'{"type": "noop"}').serialize(mask=True))
    close = ws_frames(bytes(transport.written))[-1]
    assert close.opcode is Opcode.CLOSE and int.from_bytes(close.data[:2], "big") == 1008


def test_no_edge_means_httptools_with_the_front_door_guards_only() -> None:
    # Every HTTP process gets the header timeout, connection cap and lingering close;
    # only an edge hands listeners over.
    plain = http_protocol(None)
    assert issubclass(plain, HttpToolsProtocol) and not hasattr(plain, "edge")
    assert plain.cap.limit >= 1 and plain.header_timeout_s > 0  # type: ignore[attr-defined]


class SlowKV(FakeBus):
    """A bus whose KV answers once the test opens the gate; counts the reads."""

    def __init__(self, value: bytes) -> None:
        super().__init__()
        self.value = value
        self.reads = 0
        self.gate = asyncio.Event()

    async def kv_get(self, bucket: str, key: str) -> Entry | None:
        self.reads += 1
        await self.gate.wait()
        return Entry(key, self.value, 1)


async def test_a_join_burst_reads_kv_once_and_an_open_feed_not_at_all() -> None:
    kv = SlowKV(json.dumps(LIVE).encode())
    hub = Hub(kv)
    burst = [asyncio.ensure_future(hub.snapshot(SPACE)) for _ in range(50)]
    await settle()
    kv.gate.set()
    docs = await asyncio.gather(*burst)
    assert kv.reads == 1 and all(d == from_doc(LIVE) for d in docs)
    feed = Feed(SPACE, hub.ogg)
    feed.on_doc(json.dumps({**LIVE, "_blocked": ["bob"]}).encode(),
                asyncio.get_running_loop().time())
    hub.feeds[SPACE] = feed
    held = await hub.snapshot(SPACE)
    assert held is not None and held.blocked == ["bob"] and kv.reads == 1
