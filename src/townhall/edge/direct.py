"""Direct writes: a live chunk's shared bytes go straight onto each listener's transport.

Fan-out through ASGI costs a task wake-up, a send coroutine and a frame encode per
listener per chunk (bench/fanout measured townhall at 4-5× Icecast's CPU per listener that
way). A listener that is keeping up needs none of it: the edge builds the WebSocket frame
(server frames are unmasked, so header + payload are the same bytes for everyone) and the
HTTP chunked-encoding piece of the Ogg page once, and writes them to each listener's socket
with one ``transport.write``. Anything else — text frames, catch-up, a listener whose
socket is backing up, a connection that is closing — still goes through the ASGI path and
its bounded backlog, so the slow-listener rules are unchanged.

The transport is found by walking the ASGI ``send`` closure down to uvicorn's protocol
object (uvicorn is pinned). When it is not found — another server, HTTP/1.0, a middleware
we do not know — the listener simply stays on the ASGI path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol

# Bytes already waiting in our transport buffer above which a listener is "backing up":
# its chunks go through the backlog (skip, then close) instead. 16 KiB is ~4 s of a
# 32 kbps stream, under uvicorn's 64 KiB high-water mark where the ASGI path blocks.
BACKING_UP = 16 * 1024
SWITCH = "TOWNHALL_EDGE_DIRECT"  # "0" turns the fast path off (for before/after benches)


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether direct writes are on (``TOWNHALL_EDGE_DIRECT=0`` turns them off)."""
    return environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class Writable(Protocol):
    """The part of an asyncio transport a direct writer uses."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


def ws_binary_frame(payload: bytes) -> bytes:
    """One unmasked, final, binary WebSocket frame (RFC 6455 §5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    return head + payload


def ws_text_frame(text: str) -> bytes:
    """One unmasked, final, text WebSocket frame (RFC 6455 §5.2) around ``text``."""
    frame = bytearray(ws_binary_frame(text.encode()))
    frame[0] = 0x81
    return bytes(frame)


def http_chunk(data: bytes) -> bytes:
    """One piece of an HTTP/1.1 chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _owner_with_transport(send: Any, depth: int = 0) -> Any | None:
    """The server protocol object behind an ASGI ``send`` (through middleware closures)."""
    if depth > 8 or send is None:
        return None
    owner = getattr(send, "__self__", None)
    if owner is not None and _writable(getattr(owner, "transport", None)):
        return owner
    for cell in getattr(send, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(inner):
            found = _owner_with_transport(inner, depth + 1)
            if found is not None:
                return found
    return None


def _writable(transport: Any) -> bool:
    return all(callable(getattr(transport, name, None))
               for name in ("write", "is_closing", "get_write_buffer_size"))


def _always_open() -> bool:
    return True


class DirectWriter:
    """Writes shared bytes to one listener's transport while it keeps up and is open."""

    def __init__(self, transport: Writable, limit: int = BACKING_UP,
                 is_open: Callable[[], bool] = _always_open) -> None:
        self.transport = transport
        self.limit = limit
        self.is_open = is_open  # the protocol's own view: no data after a close frame

    def backing_up(self) -> bool:
        """More than ``limit`` bytes still waiting in our buffer for this listener."""
        return self.transport.get_write_buffer_size() > self.limit

    def write(self, data: bytes) -> bool:
        """Write now if the listener is keeping up; False = use the backlog path."""
        t = self.transport
        if t.is_closing() or not self.is_open() or t.get_write_buffer_size() > self.limit:
            return False
        t.write(data)
        return True

    @classmethod
    def for_websocket(cls, send: Any) -> DirectWriter | None:
        """From a WebSocket's ASGI send (uvicorn's ``websockets`` protocol), if reachable."""
        owner = _owner_with_transport(send)
        # uvicorn's legacy-websockets protocol: ``open`` is False from the moment either
        # side starts the closing handshake; ``closed_event`` once the app asked to close.
        if owner is None or not isinstance(getattr(owner, "open", None), bool):
            return None
        closed = getattr(owner, "closed_event", None)
        if closed is None or not callable(getattr(closed, "is_set", None)):
            return None

        def is_open() -> bool:
            return bool(owner.open) and not closed.is_set()

        return cls(owner.transport, is_open=is_open)

    @classmethod
    def for_chunked_http(cls, send: Any) -> DirectWriter | None:
        """From an HTTP response's ASGI send, only once it is chunked (uvicorn's cycle)."""
        owner = _owner_with_transport(send)
        if owner is None or getattr(owner, "chunked_encoding", None) is not True:
            return None
        if not all(isinstance(getattr(owner, name, None), bool)
                   for name in ("disconnected", "response_complete")):
            return None

        def is_open() -> bool:
            return not owner.disconnected and not owner.response_complete

        return cls(owner.transport, is_open=is_open)
