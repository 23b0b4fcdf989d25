"""The fan-out's fast set: listeners keeping up get the shared wire bytes in one tight loop;
a paused socket, a queued text or a pending skip moves a listener to its backlog until it
has drained; wire bytes exactly as RFC 6455 / RFC 9112 readers expect."""

from __future__ import annotations

import socket
from collections.abc import Generator

import h11
import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from tests.snapshots import space
from townhall.edge.fanout import Outlet
from townhall.edge.feed import Feed
from townhall.edge.frame import Frame
from townhall.edge.subscriber import Subscriber
from townhall.edge.wire import http_chunk, ws_binary_frame, ws_text_frame
from townhall.media.chunk import Chunk
from townhall.media.ogg import OggOpusStream


class Socket:
    """A transport's write side: records writes, pauses its protocol past ``high`` bytes
    buffered (as asyncio transports do, synchronously inside write)."""

    def __init__(self, sub: Subscriber, high: int | None = None) -> None:
        self.sub = sub
        self.high = high
        self.written: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)
        if self.high is not None and self.buffered > self.high and not self.sub.paused:
            self.sub.pause()

    def drained(self) -> None:
        """resume_writing: the connection asks the feed to send the backlog."""
        self.buffered = 0
        assert self.sub.feed is not None
        self.sub.feed.resume(self.sub)


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


def chunk(seq: int) -> bytes:
    return Chunk(seq=seq, pts=seq * 4800, sent_us=0, packets=(b"\xf8\x01",) * 5).encode()


def seqs(written: list[bytes]) -> list[int]:
    return [Chunk.decode(f.data).seq for f in parse_ws(b"".join(written))
            if f.opcode is Opcode.BINARY]


def streaming(feed: Feed, kind: str = "ws", high: int | None = None
              ) -> tuple[Subscriber, Socket]:
    sub = Subscriber(kind)
    sock = Socket(sub, high)
    feed.attach(sub)
    feed.open(sub, Outlet(sock.write))
    return sub, sock


@pytest.mark.parametrize("size", [0, 1, 125, 126, 400, 65535, 65536, 70000])
def test_ws_binary_frame_matches_rfc6455_at_every_length_boundary(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    wire = ws_binary_frame(payload)
    assert wire == WsFrame(Opcode.BINARY, payload).serialize(mask=False)
    (frame,) = parse_ws(wire)
    assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == payload


def test_ws_text_frame_matches_rfc6455() -> None:
    for text in ('{"type": "levels"}', "é" * 200, "x" * 70000):
        wire = ws_text_frame(text)
        assert wire == WsFrame(Opcode.TEXT, text.encode()).serialize(mask=False)


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


def test_listeners_keeping_up_are_in_the_fast_set_and_share_one_bytes_object() -> None:
    feed = Feed("s", OggOpusStream())
    ws, t_ws = streaming(feed, "ws")
    ogg, t_ogg = streaming(feed, "ogg")
    _raw, t_raw = streaming(feed, "ogg_raw")
    assert ws in feed.fast["ws"] and ogg in feed.fast["ogg"] and not feed.slow
    feed.on_media(chunk(1))
    frame = feed.ring.since(1)[0][1]
    assert t_ws.written[0] is frame.ws_wire and t_ogg.written[0] is frame.ogg_wire
    assert t_raw.written == [frame.ogg] and frame.ogg.startswith(b"OggS")
    assert parse_ws(frame.ws_wire)[0].data == chunk(1)


def test_not_streaming_yet_means_queued_then_written_in_order_when_it_starts() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws")
    feed.attach(sub)
    sub.push_text('{"type": "state"}')
    feed.on_media(chunk(1))
    feed.on_media(chunk(2))
    assert sub in feed.slow and len(sub.backlog) == 2
    sock = Socket(sub)
    feed.open(sub, Outlet(sock.write))
    frames = parse_ws(b"".join(sock.written))
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.BINARY, Opcode.BINARY]
    assert sub in feed.fast["ws"]
    feed.on_media(chunk(3))
    assert seqs(sock.written) == [1, 2, 3]


def test_pause_moves_a_listener_to_its_backlog_and_resume_brings_it_back_in_order() -> None:
    feed = Feed("s", OggOpusStream())
    sub, sock = streaming(feed, high=1000)
    _other, other_sock = streaming(feed)
    n = 1
    while not sub.paused:               # its socket fills up: pause_writing
        feed.on_media(chunk(n))
        n += 1
    assert sub not in feed.fast["ws"] and sub in feed.slow and sub.behind() is True
    written = len(sock.written)
    for _ in range(5):
        feed.on_media(chunk(n))
        n += 1
    assert len(sock.written) == written and len(sub.backlog) == 5
    sock.drained()                      # resume_writing: backlog out, back in the fast set
    assert sub in feed.fast["ws"] and not len(sub.backlog)
    feed.on_media(chunk(n))
    assert seqs(sock.written) == list(range(1, n + 1)) == seqs(other_sock.written)


def test_a_stalled_listener_is_skipped_then_closed_4408_alone() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=3)
    ended: list[tuple[int, str] | None] = []
    sub.on_end = lambda: ended.append(sub.close)
    sock = Socket(sub, high=0)
    feed.attach(sub)
    feed.open(sub, Outlet(sock.write))
    _other, other_sock = streaming(feed)
    for seq in range(1, 40):
        feed.on_media(chunk(seq))
    assert sub.backlog.skips >= 1 and ended and ended[0] is not None
    assert ended[0][0] == 4408 and "resume_from" in ended[0][1]
    assert sub not in feed.fast["ws"]
    assert seqs(other_sock.written) == list(range(1, 40))


def test_a_skip_is_announced_with_a_jump_frame_before_the_next_chunk() -> None:
    feed = Feed("s", OggOpusStream())
    sub = Subscriber("ws", backlog_limit=3)
    sock = Socket(sub, high=0)
    feed.attach(sub)
    feed.open(sub, Outlet(sock.write))   # the first write pauses it
    for seq in range(1, 10):
        feed.on_media(chunk(seq))
    sock.high = None
    sock.drained()
    frames = parse_ws(b"".join(sock.written))
    texts = [f.data for f in frames if f.opcode is Opcode.TEXT]
    assert texts and b'"jump"' in texts[0] and b'"slow"' in texts[0]
    assert sub in feed.fast["ws"]


def test_own_text_leaves_the_fast_set_only_while_it_is_queued() -> None:
    feed = Feed("s", OggOpusStream())
    sub, sock = streaming(feed)
    feed.text(sub, '{"type": "pong"}')   # written at once: still keeping up
    assert sub in feed.fast["ws"] and not sub.texts
    sub.pause()
    feed.text(sub, '{"type": "pong"}')
    feed.on_levels('{"type": "levels", "levels": {}}')
    assert len(sub.texts) == 2 and sub in feed.slow
    sock.drained()
    assert [f.opcode for f in parse_ws(b"".join(sock.written))] == [Opcode.TEXT] * 3


def test_coalesced_flush_is_one_write_per_fast_listener_and_no_duplicate_after_resume(
        ) -> None:
    feed = Feed("s", OggOpusStream())
    _fast, sock = streaming(feed)
    feed.coalesce = True
    for seq in range(1, 6):
        feed.on_media(chunk(seq))
    late = Subscriber("ws")             # resumes from 3 while 1..5 are held
    late.preload(feed.ring.since(3))
    feed.attach(late)
    late_sock = Socket(late)
    feed.open(late, Outlet(late_sock.write))
    assert late in feed.slow            # it already has held chunks: not fast yet
    feed.flush()
    assert len(sock.written) == 1 and seqs(sock.written) == [1, 2, 3, 4, 5]
    assert seqs(late_sock.written) == [3, 4, 5]
    feed.coalesce = False
    feed.on_media(chunk(6))
    assert late in feed.fast["ws"] and seqs(late_sock.written) == [3, 4, 5, 6]


def test_pausing_while_chunks_are_held_still_gets_them_at_the_flush() -> None:
    feed = Feed("s", OggOpusStream())
    sub, sock = streaming(feed)
    feed.coalesce = True
    for seq in range(1, 4):
        feed.on_media(chunk(seq))
    sub.pause()
    feed.flush()
    sock.drained()
    assert seqs(sock.written) == [1, 2, 3]


def test_ogg_listeners_get_no_text_and_ended_closes_everyone_after_the_state() -> None:
    feed = Feed("s", OggOpusStream())
    ws, t_ws = streaming(feed, "ws")
    ogg, t_ogg = streaming(feed, "ogg")
    feed.on_state(space(id="s", state="live", version=1))
    feed.on_levels('{"type": "levels", "levels": {}}')
    assert len(t_ws.written) == 2 and t_ogg.written == [] and ogg in feed.fast["ogg"]
    feed.on_state(space(id="s", state="ended", version=2))
    assert ws.close is not None and ws.close[0] == 4410 and ogg.close is not None
    assert not any(feed.fast.values())


def test_a_transport_that_raises_leaves_the_fast_set_without_stopping_the_others() -> None:
    feed = Feed("s", OggOpusStream())
    broken = Subscriber("ws")
    feed.attach(broken)

    def closed(data: bytes) -> None:
        raise RuntimeError("unable to perform operation on a closed transport")

    feed.open(broken, Outlet(closed))
    _other, sock = streaming(feed)
    feed.on_media(chunk(1))
    assert broken not in feed.fast["ws"] and seqs(sock.written) == [1]


def test_detach_forgets_the_listener() -> None:
    feed = Feed("s", OggOpusStream())
    sub, _ = streaming(feed)
    feed.detach(sub)
    assert not feed.subscribers and not feed.fast["ws"] and not feed.slow
    sub.pause()                         # a late flow-control event changes nothing
    assert not feed.slow


def test_frame_wire_by_kind() -> None:
    frame = Frame(1, b"c", b"page", 0, b"ws", b"chunked")
    assert (frame.wire("ws"), frame.wire("ogg"), frame.wire("ogg_raw")) == (
        b"ws", b"chunked", b"page")


# Direct sends: listeners that bring their socket (edge/connection.py) are sent to with
# socket.send through map(); a short or refused send hands the rest to the transport.
# Real kernel sockets (a socketpair per listener), no event loop: still deterministic.

def socket_listener(feed: Feed, sndbuf: int | None = None
                    ) -> tuple[Subscriber, Socket, socket.socket, socket.socket]:
    """A fast listener sending through ``ours``; ``theirs`` is the reader's end."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sub = Subscriber("ws")
    transport = Socket(sub, high=0)   # high-water 0: holding any byte pauses it
    feed.attach(sub)
    feed.open(sub, Outlet(transport.write, ours))
    return sub, transport, ours, theirs


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            got = sock.recv(1 << 16)
        except BlockingIOError:
            return data
        if not got:
            return data
        data += got


@pytest.fixture
def pairs() -> Generator[list[socket.socket], None, None]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_fast_listeners_with_a_socket_get_each_chunk_by_one_direct_send(
        pairs: list[socket.socket]) -> None:
    feed = Feed("s", OggOpusStream())
    a, t_a, ours_a, theirs_a = socket_listener(feed)
    b, t_b, ours_b, theirs_b = socket_listener(feed)
    pairs += [ours_a, theirs_a, ours_b, theirs_b]
    assert feed.fast_set("ws").senders == [a, b] and not feed.fast_set("ws").writers
    for seq in range(1, 6):
        feed.on_media(chunk(seq))
    feed.on_levels('{"type": "levels", "levels": {}}')
    for transport, theirs in ((t_a, theirs_a), (t_b, theirs_b)):
        assert transport.written == []                  # nothing went through write()
        frames = parse_ws(read_all(theirs))
        assert [Chunk.decode(f.data).seq for f in frames if f.opcode is Opcode.BINARY] == [
            1, 2, 3, 4, 5]
        assert frames[-1].opcode is Opcode.TEXT
    assert a in feed.fast["ws"] and b in feed.fast["ws"]


def test_a_full_socket_hands_the_rest_to_its_transport_in_order_and_leaves_the_fast_set(
        pairs: list[socket.socket]) -> None:
    feed = Feed("s", OggOpusStream())
    full, t_full, ours, theirs = socket_listener(feed, sndbuf=4096)  # and never read
    other, t_other, ours_o, theirs_o = socket_listener(feed)
    pairs += [ours, theirs, ours_o, theirs_o]
    wires = []
    seq = 0
    while full in feed.fast["ws"]:
        seq += 1
        assert seq < 10_000, "the socket never filled"
        feed.on_media(chunk(seq))
        wires.append(feed.ring.since(seq)[0][1].ws_wire)
    assert full.paused and full in feed.slow
    # Everything sent while it was fast: what reached the socket, then what the transport
    # took, byte for byte in order — no chunk lost, none twice.
    assert read_all(theirs) + b"".join(t_full.written) == b"".join(wires)
    assert t_full.written                               # the rest did go to the transport
    # The other listener was not held up, and kept receiving directly.
    assert seqs([read_all(theirs_o)]) == list(range(1, seq + 1)) and not t_other.written
    feed.on_media(chunk(seq + 1))                       # now queued for the full one
    assert len(full.backlog) == 1 and other in feed.fast["ws"]


def test_a_closed_socket_leaves_the_fast_set_and_the_ones_after_it_still_get_the_chunk(
        pairs: list[socket.socket]) -> None:
    feed = Feed("s", OggOpusStream())
    first, _t1, ours1, theirs1 = socket_listener(feed)
    gone, _t2, ours2, theirs2 = socket_listener(feed)
    last, _t3, ours3, theirs3 = socket_listener(feed)
    pairs += [ours1, theirs1, ours2, ours3, theirs3]
    theirs2.close()                                     # the reader went away: EPIPE
    feed.on_media(chunk(1))
    assert gone not in feed.fast["ws"] and gone.paused
    assert first in feed.fast["ws"] and last in feed.fast["ws"]
    feed.on_media(chunk(2))
    assert seqs([read_all(theirs1)]) == [1, 2] == seqs([read_all(theirs3)])


def test_a_subscriber_returns_the_bytes_to_send_and_holds_no_socket() -> None:
    sub = Subscriber("ws")
    assert {"sock", "write"}.isdisjoint(Subscriber.__slots__)
    assert sub.push_text('{"type": "state"}') == b""    # not streaming yet: queued
    first = sub.start(b"HEAD")
    assert first == b"HEAD" + ws_text_frame('{"type": "state"}')
    assert sub.push_text("x") == ws_text_frame("x")       # nothing queued: at once
    sub.pause()
    assert sub.push_text("y") == b"" and sub.resume() == ws_text_frame("y")


def test_only_the_fan_out_touches_sockets() -> None:
    """One module of the edge sends to sockets: no other imports ``socket``."""
    import ast
    from pathlib import Path

    import townhall.edge
    edge = Path(townhall.edge.__file__).parent
    importers = sorted(
        path.name for path in edge.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Import) and any(a.name == "socket" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.module == "socket"))
    assert importers == ["fanout.py"]
