"""One listener as the edge sees it: what it has been sent, what waits for it, why it closes.

Sans-I/O: it holds no socket and writes nothing. Its methods return the bytes to send now
(b"" for none); the fan-out (townhall.edge.fanout) alone sends them, and sends the shared
chunks to it directly while it keeps up. While its socket is paused or text of its own is
queued it is served through its bounded backlog (skip, then close with a resume hint).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from townhall.closecode import CloseCode
from townhall.edge import metrics
from townhall.edge.backlog import Backlog, Offer
from townhall.edge.frame import Frame
from townhall.edge.wire import ws_text_frame

if TYPE_CHECKING:
    from townhall.edge.feed import Feed

BEHIND = 3              # queued chunks from which a listener counts as "behind"
MAX_TEXTS = 32          # queued text frames per listener; older levels are dropped first

Write = Callable[[bytes], Any]


class Subscriber:
    """One listener: in its feed's fast set while it keeps up, else served through a
    bounded backlog (skip, then close with a resume hint).

    Sans-I/O: every method that may produce bytes returns them for the fan-out to send;
    the connection reports its transport's flow control through ``pause``/``resume`` and
    acts on ``close`` through ``on_end``."""

    __slots__ = (
        "backlog",
        "close",
        "fast_since",
        "feed",
        "identity",
        "kind",
        "last_seq",
        "on_end",
        "open",
        "paused",
        "texts",
    )

    def __init__(self, kind: str, backlog_limit: int = 20, identity: str | None = None,
                 ) -> None:
        self.kind = kind
        self.identity = identity
        self.backlog: Backlog[Frame] = Backlog(limit=backlog_limit)
        self.texts: deque[str] = deque()
        self.close: tuple[int, str] | None = None
        self.last_seq = -1              # newest chunk queued or sent to this listener
        self.open = False               # its connection is ready for the stream
        self.paused = False             # its transport is above its high-water mark
        self.feed: Feed | None = None
        self.on_end: Callable[[], None] | None = None
        self.fast_since = 0             # feed.chunks when it entered the fast set

    def keeping_up(self) -> bool:
        """Nothing queued, nothing to announce, socket accepting: the fast set's rule."""
        return (self.open and not self.paused and not self.texts
                and not len(self.backlog) and self.backlog.pending_skip is None
                and self.close is None)

    def sync(self) -> None:
        """Into or out of the feed's fast set, as ``keeping_up()`` says now."""
        if self.feed is not None:
            self.feed.place(self)

    def preload(self, items: list[tuple[int, Frame]]) -> None:
        """Catch-up chunks for a resuming listener, ahead of the live ones."""
        self.backlog.preload(items)
        if items:
            self.last_seq = max(self.last_seq, items[-1][0])

    def behind(self) -> bool:
        """Chunks queue up for this listener, or its socket stopped accepting writes."""
        return self.paused or len(self.backlog) >= BEHIND

    def start(self, first: bytes = b"") -> bytes:
        """The connection is ready for the stream: ``first`` (e.g. the response head and
        hello) and what is queued, as one piece to send; from then on it may go fast."""
        self.open = True
        return self.drain(first)

    def pause(self) -> None:
        """Its transport passed the high-water mark: queue from now on."""
        self.paused = True
        self.sync()

    def resume(self) -> bytes:
        """Its transport drained below the low-water mark: the backlog, to send."""
        self.paused = False
        return self.drain()

    def push_frame(self, frame: Frame) -> bytes | None:
        """One live chunk while not in the fast set: the bytes to send now (b"" when it
        is queued), or None when it already had the chunk."""
        if frame.seq <= self.last_seq:
            return None  # already queued as catch-up (a join while chunks were held)
        self.last_seq = frame.seq
        self._queue(frame)
        return self.drain()

    def push_frames(self, frames: list[Frame]) -> bytes:
        """Several live chunks at once (a coalesced flush): the bytes to send now."""
        self.backlog.allow(len(frames))  # the edge held them, not the reader
        for frame in frames:
            if frame.seq > self.last_seq:
                self.last_seq = frame.seq
                self._queue(frame)
        return self.drain()

    def _queue(self, frame: Frame) -> None:
        outcome = self.backlog.offer(frame.seq, frame)
        if outcome is Offer.SKIPPED:
            metrics.SKIPS.inc()
        elif outcome is Offer.CLOSE and self.close is None:
            metrics.SLOW_CLOSES.inc()
            self.end(CloseCode.TOO_SLOW, json.dumps({"resume_from": self.backlog.resume_from}))

    def push_text(self, text: str) -> bytes:
        """Queue a text frame of this listener's own: the bytes to send now."""
        if self.kind != "ws":
            return b""  # state and levels do not travel in Ogg
        if len(self.texts) >= MAX_TEXTS:
            self.texts.popleft()
        self.texts.append(text)
        return self.drain()

    def drain(self, first: bytes = b"") -> bytes:
        """Unless its socket is paused, everything queued (oldest first, after ``first``)
        as one piece to send — the backlog is bounded, and sending it pauses the listener
        if it fills the buffer. Back into the fast set if that leaves nothing queued."""
        out: list[bytes] = []
        if self.open and self.close is None:
            if first:
                out.append(first)
            if not self.paused:
                self._take_all(out)
        self.sync()
        return b"".join(out) if len(out) != 1 else out[0]

    def take_texts(self) -> bytes:
        """The queued text frames, taken (e.g. the final "ended" state, ahead of a close)."""
        data = b"".join(ws_text_frame(t) for t in self.texts)
        self.texts.clear()
        return data

    def _take_all(self, out: list[bytes]) -> None:
        kind = self.kind
        while True:
            if self.texts:
                out.append(ws_text_frame(self.texts.popleft()))
                continue
            skip = self.backlog.take_skip()
            if skip is not None:
                if kind == "ws":  # for Ogg readers a skip is just a page-number jump
                    out.append(ws_text_frame(json.dumps({
                        "type": "jump", "from": skip.from_seq, "to": skip.to_seq,
                        "reason": "slow"})))
                continue
            item = self.backlog.take()
            if item is None:
                return
            out.append(item[1].wire(kind))

    def end(self, code: int, reason: str) -> None:
        """Decide to close this listener (first reason wins); its connection acts on it."""
        if self.close is None:
            self.close = (code, reason)
            self.sync()
            if self.on_end is not None:
                self.on_end()

    def next_frame(self) -> Frame | None:
        """Take the oldest queued chunk (for a connection that reads the backlog itself)."""
        item = self.backlog.take()
        return item[1] if item else None
