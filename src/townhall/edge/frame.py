"""A chunk as an edge sends it: built once per edge, in every form a listener may need."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("ws", "ogg", "ogg_raw")  # WebSocket; Ogg over chunked HTTP/1.1; Ogg over HTTP/1.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One chunk in every form a listener may need, built once per edge."""

    seq: int
    ws: bytes            # exactly Chunk.encode() bytes: one binary WebSocket frame
    ogg: bytes           # one Ogg page
    sent_us: int
    ws_wire: bytes = b""   # the whole WebSocket frame (header + ws)
    ogg_wire: bytes = b""  # the Ogg page as one HTTP/1.1 chunked-body piece

    def wire(self, kind: str) -> bytes:
        """The bytes a listener of ``kind`` gets on its socket for this chunk."""
        return self.ws_wire if kind == "ws" else self.ogg_wire if kind == "ogg" else self.ogg


def wires(frames: list[Frame]) -> dict[str, bytes]:
    """Several frames as one piece of bytes per kind of listener."""
    return {kind: b"".join(f.wire(kind) for f in frames) for kind in KINDS}
