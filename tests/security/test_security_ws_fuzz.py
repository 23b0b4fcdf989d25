"""Fuzzing the WebSocket listener's frame handling: after a valid handshake, arbitrary
client bytes (random, and frames with random opcodes, flags, lengths and masks, split at
random points) go into ``WsListener.data_received`` on a fake transport. It must never
raise and never write more than a small bound back, whatever it is sent.

Pure: no sockets, no NATS (the Space is an open feed with its KV entry cached)."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_edge_handoff import LIVE, SPACE, connect, edge, settle, upgrade
from townhall.edge.websocket import WsListener

# What one connection may get back for anything it sends: at most the client message
# budget's pongs (20 x 127 bytes), a few JSON texts and a close frame.
MAX_REPLY = 8 * 1024


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One client frame, often almost valid: random FIN/RSV bits and opcode, masked or
    not, a length that may lie about the payload."""
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    first = (draw(st.booleans()) << 7) | (draw(st.integers(0, 7)) << 4) | opcode
    payload = draw(st.binary(max_size=200))
    length = draw(st.just(len(payload)) | st.integers(0, 2**16 + 5) | st.just(2**63 - 1))
    masked = draw(st.booleans() | st.just(True))
    if length < 126:
        head = bytes([first, (masked << 7) | length])
    elif length < 2**16:
        head = bytes([first, (masked << 7) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, (masked << 7) | 127]) + struct.pack("!Q", length)
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


pieces = st.lists(st.binary(max_size=300) | frames(), max_size=30)


async def feed(chunks: list[bytes]) -> tuple[int, int]:
    node = edge(LIVE)
    proto, transport, _ = connect(node)
    proto.data_received(upgrade(f"/ws/{SPACE}"))
    await settle()
    listener = transport.protocol
    assert isinstance(listener, WsListener)
    baseline = len(transport.written)
    for chunk in chunks:
        if transport.closed:
            break
        listener.data_received(chunk)
    await settle()
    return baseline, len(transport.written)


@settings(max_examples=400, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pieces)
def test_arbitrary_client_bytes_never_raise_and_get_a_bounded_reply(
        chunks: list[bytes]) -> None:
    baseline, total = asyncio.run(feed(chunks))
    assert total - baseline <= MAX_REPLY


@settings(max_examples=100, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 20_000), st.integers(1, 4096))
def test_a_stream_of_valid_pings_split_anywhere_gets_a_bounded_reply(
        count: int, split: int) -> None:
    from websockets.frames import Frame, Opcode

    data = Frame(Opcode.PING, b"x" * 125).serialize(mask=True) * min(count, 2000)
    chunks = [data[i:i + split] for i in range(0, len(data), split)]
    baseline, total = asyncio.run(feed(chunks))
    assert total - baseline <= MAX_REPLY
