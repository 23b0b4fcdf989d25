"""Direct writes: wire bytes exactly as RFC 6455 / RFC 9112 readers expect, and a listener
written to directly only while nothing is queued, in flight, backing up or closing."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import h11
import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from townhall.edge.direct import (
    BACKING_UP,
    DirectWriter,
    enabled,
    http_chunk,
    ws_binary_frame,
    ws_text_frame,
)
from townhall.edge.hub import DIRECT, DUPLICATE, QUEUED, Feed, Frame, Subscriber
from townhall.media.chunk import Chunk
from townhall.media.ogg import OggOpusStream


class FakeTransport:
    """Records writes; its buffer size and closing state are set by the test."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def parse_ws(data: bytes) -> list[WsFrame]:
    """Frames as the websockets library's reader sees them (a client: unmasked frames)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser: Generator[None, None, WsFrame] = WsFrame.parse(
            reader.read_exact, mask=False, max_size=None)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("incomplete frame")
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 400, 65535, 65536, 70000])
def test_ws_binary_frame_matches_rfc6455_at_every_length_boundary(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    wire = ws_binary_frame(payload)
    assert wire == WsFrame(Opcode.BINARY, payload).serialize(mask=False)
    (frame,) = parse_ws(wire)
    assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == payload
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


def test_http_chunks_parse_as_the_chunked_body_h11_reads() -> None:
    pieces = [b"OggS" + bytes(range(200)), b"x", bytes(4096)]
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/listen/s.opus", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"".join(http_chunk(p) for p in pieces) + b"0\r\n\r\n")
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        assert event is not h11.NEED_DATA
    assert body == b"".join(pieces)
    assert http_chunk(b"abc") == b"3\r\nabc\r\n" and http_chunk(bytes(26))[:4] == b"1a\r\n"


def test_writer_refuses_when_backing_up_closing_or_closed_by_protocol() -> None:
    t = FakeTransport()
    state = {"open": True}
    w = DirectWriter(t, is_open=lambda: state["open"])
    assert w.write(b"a") and t.written == [b"a"]
    t.buffered = BACKING_UP + 1
    assert w.backing_up() and not w.write(b"b")
    t.buffered = BACKING_UP
    assert not w.backing_up() and w.write(b"c")
    state["open"] = False           # a close frame was sent or received
    assert not w.write(b"d")
    state["open"] = True
    t.closing = True
    assert not w.write(b"e")
    assert t.written == [b"a", b"c"]


def chunk(seq: int) -> bytes:
    return Chunk(seq=seq, pts=seq * 4800, sent_us=0, packets=(b"\xf8\x01",) * 5).encode()


def direct_sub(kind: str = "ws") -> tuple[Subscriber, FakeTransport]:
    sub = Subscriber(kind)
    t = FakeTransport()
    sub.direct = DirectWriter(t)
    return sub, t


def test_a_listener_keeping_up_gets_the_shared_wire_bytes_without_a_wake_up() -> None:
    feed = Feed("s", OggOpusStream())
    ws, t_ws = direct_sub("ws")
    ogg, t_ogg = direct_sub("ogg")
    feed.subscribers |= {ws, ogg}
    feed.on_media(chunk(1))
    frame = feed.ring.since(1)[0][1]
    assert t_ws.written == [frame.ws_wire] and t_ogg.written == [frame.ogg_wire]
    assert t_ws.written[0] is frame.ws_wire          # shared, not copied per listener
    assert parse_ws(frame.ws_wire)[0].data == chunk(1)
    assert not len(ws.backlog) and not ws.wake.is_set() and not ogg.wake.is_set()


def test_queued_text_or_in_flight_send_sends_the_chunk_through_the_backlog() -> None:
    feed = Feed("s", OggOpusStream())
    sub, t = direct_sub()
    feed.subscribers.add(sub)
    sub.push_text('{"type": "state"}')
    feed.on_media(chunk(1))                     # behind a queued text frame
    assert t.written == [] and len(sub.backlog) == 1
    sub.texts.clear()
    feed.on_media(chunk(2))                     # chunk 1 still queued: 2 must follow it
    assert t.written == [] and len(sub.backlog) == 2
    while sub.next_frame():
        pass
    sub.busy = True                             # the writer task is mid-send
    feed.on_media(chunk(3))
    assert t.written == [] and len(sub.backlog) == 1
    sub.next_frame()
    sub.busy = False
    feed.on_media(chunk(4))
    assert len(t.written) == 1 and parse_ws(t.written[0])[0].data == chunk(4)


def test_backing_up_falls_back_to_the_backlog_and_counts_as_behind() -> None:
    sub, t = direct_sub()
    feed = Feed("s", OggOpusStream())
    feed.subscribers.add(sub)
    feed.on_media(chunk(1))
    t.buffered = BACKING_UP + 1
    assert sub.behind()
    feed.on_media(chunk(2))
    t.buffered = 0                              # drained, but chunk 2 is still queued
    feed.on_media(chunk(3))
    assert len(t.written) == 1 and [f.seq for f in (sub.next_frame(), sub.next_frame())
                                    if f] == [2, 3]
    assert not sub.behind()


def test_a_stalled_direct_listener_is_still_skipped_then_closed_4408() -> None:
    sub, t = direct_sub()
    sub.backlog.limit = 3
    t.buffered = BACKING_UP * 4                 # its socket stopped draining
    for seq in range(1, 40):
        sub.push_frame(Frame(seq, b"", b"", 0, b"w", b"o"))
    assert t.written == [] and sub.close is not None and sub.close[0] == 4408


def test_no_direct_write_after_close_or_with_a_pending_skip() -> None:
    sub, t = direct_sub()
    sub.backlog.pending_skip = object()  # type: ignore[assignment]
    assert sub.push_frame(Frame(1, b"", b"", 0, b"w", b"o")) == QUEUED
    sub.backlog.pending_skip = None
    sub.next_frame()
    sub.end(4403, "removed from this Space")
    assert sub.push_frame(Frame(2, b"", b"", 0, b"w", b"o")) == QUEUED
    assert sub.push_frame(Frame(2, b"", b"", 0, b"w", b"o")) == DUPLICATE
    assert t.written == []


def test_coalesced_flush_is_one_write_per_listener_in_order() -> None:
    feed = Feed("s", OggOpusStream())
    sub, t = direct_sub()
    plain = Subscriber("ws")
    feed.subscribers |= {sub, plain}
    feed.coalesce = True
    for seq in range(1, 6):
        feed.on_media(chunk(seq))
    assert t.written == []
    feed.flush()
    assert len(t.written) == 1
    assert [f.data for f in parse_ws(t.written[0])] == [chunk(s) for s in range(1, 6)]
    assert sub.last_seq == 5 and not len(sub.backlog)
    assert len(plain.backlog) == 5              # no writer: the ASGI path as before
    # The flush's allowance went out with it: a reader that then stops still skips at
    # its usual limit, not limit + the flush.
    sub.backlog.limit = 3
    t.buffered = BACKING_UP + 1
    feed.coalesce = False
    for seq in range(6, 10):
        feed.on_media(chunk(seq))
    assert sub.backlog.skips == 1


def test_flush_after_a_resume_preload_does_not_write_directly_out_of_order() -> None:
    feed = Feed("s", OggOpusStream())
    sub, t = direct_sub()
    feed.coalesce = True
    for seq in range(1, 6):
        feed.on_media(chunk(seq))
    sub.preload(feed.ring.since(3))
    feed.subscribers.add(sub)
    feed.flush()
    assert t.written == [] and [f.seq for f in iter(sub.next_frame, None)] == [3, 4, 5]
    assert sub.push_frame(feed.ring.since(5)[0][1]) == DUPLICATE
    feed.coalesce = False
    feed.on_media(chunk(6))
    assert len(t.written) == 1


def test_ogg_listeners_ignore_text_so_state_updates_do_not_block_direct_writes() -> None:
    feed = Feed("s", OggOpusStream())
    sub, t = direct_sub("ogg")
    feed.subscribers.add(sub)
    feed.on_state({"id": "s", "state": "live", "version": 1})
    assert not sub.texts
    assert sub.push_frame(feed.frame(chunk(1))) == DIRECT and t.written


class FakeWsProtocol:
    """The attributes DirectWriter.for_websocket reads off uvicorn's websockets protocol."""

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.open = True
        self.closed_event = asyncio.Event()

    async def asgi_send(self, message: Any) -> None:
        pass


class FakeHttpCycle:
    """The attributes DirectWriter.for_chunked_http reads off uvicorn's httptools cycle."""

    def __init__(self, chunked: bool | None) -> None:
        self.transport = FakeTransport()
        self.chunked_encoding = chunked
        self.disconnected = False
        self.response_complete = False

    async def send(self, message: Any) -> None:
        pass


def wrapped(send: Any) -> Any:
    """A middleware-style closure around ``send``."""
    async def send_wrapper(message: Any) -> None:
        await send(message)
    return send_wrapper


def test_writer_found_through_middleware_closures_and_follows_the_protocol_state() -> None:
    proto = FakeWsProtocol()
    w = DirectWriter.for_websocket(wrapped(wrapped(proto.asgi_send)))
    assert w is not None and w.transport is proto.transport and w.write(b"x")
    proto.open = False
    assert not w.write(b"y")
    proto.open = True
    proto.closed_event.set()
    assert not w.write(b"z")
    cycle = FakeHttpCycle(chunked=True)
    h = DirectWriter.for_chunked_http(wrapped(cycle.send))
    assert h is not None and h.write(b"x")
    cycle.disconnected = True
    assert not h.write(b"y")


def test_no_writer_when_the_server_is_not_one_we_know() -> None:
    async def bare(message: Any) -> None:
        pass
    assert DirectWriter.for_websocket(bare) is None
    assert DirectWriter.for_websocket(FakeHttpCycle(True).send) is None  # no .open
    assert DirectWriter.for_chunked_http(FakeHttpCycle(chunked=False).send) is None  # HTTP/1.0
    assert DirectWriter.for_chunked_http(FakeHttpCycle(chunked=None).send) is None


def test_switch() -> None:
    assert enabled({}) and enabled({"TOWNHALL_EDGE_DIRECT": "1"})
    assert not enabled({"TOWNHALL_EDGE_DIRECT": "0"})
    assert not enabled({"TOWNHALL_EDGE_DIRECT": "off"})


def test_ws_text_frame_matches_rfc6455() -> None:
    for text in ('{"type": "levels"}', "é" * 200, "x" * 70000):
        wire = ws_text_frame(text)
        assert wire == WsFrame(Opcode.TEXT, text.encode()).serialize(mask=False)
        (frame,) = parse_ws(wire)
        assert frame.opcode is Opcode.TEXT and bytes(frame.data).decode() == text


def test_shared_state_and_levels_go_direct_only_when_nothing_is_queued() -> None:
    feed = Feed("s", OggOpusStream())
    ws, t_ws = direct_sub("ws")
    ogg, t_ogg = direct_sub("ogg")
    feed.subscribers |= {ws, ogg}
    feed.on_state({"id": "s", "state": "live", "version": 1})
    feed.on_levels('{"type": "levels", "levels": {}}')
    assert [f.opcode for f in parse_ws(b"".join(t_ws.written))] == [Opcode.TEXT] * 2
    assert not ws.texts and not ogg.texts and t_ogg.written == []
    ws.push_text('{"type": "pong"}')           # per-listener: always queued
    feed.on_levels('{"type": "levels", "levels": {"a": 1}}')
    assert len(t_ws.written) == 2 and len(ws.texts) == 2   # behind the pong, in order
    feed.on_state({"id": "s", "state": "ended", "version": 2})
    assert ws.close is not None and ws.close[0] == 4410 and len(ws.texts) == 3
