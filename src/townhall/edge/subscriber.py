"""One listener as the edge sees it: what it has been sent, what waits for it, why it closes.

It is written to through the fan-out (townhall.edge.fanout) while it keeps up, and through
its bounded backlog (skip, then close with a resume hint) while its socket is paused or
text of its own is queued.
"""

from __future__ import annotations

import json
import socket
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
DUPLICATE, QUEUED, WRITTEN = -1, 0, 1   # what push_frame did with a chunk

Write = Callable[[bytes], Any]


class Subscriber:
    """One listener: written to directly while it keeps up, through a bounded backlog
    (skip, then close with a resume hint) while its socket is paused or text is queued.

    Sans-I/O: the connection hands it ``write`` (its transport's) once the stream may
    start, calls ``pause``/``resume`` from the transport's flow control, and acts on
    ``close`` through ``on_end``."""

    __slots__ = (
        "backlog",
        "close",
        "fast_since",
        "feed",
        "identity",
        "kind",
        "last_seq",
        "on_end",
        "paused",
        "sock",
        "texts",
        "write",
    )

    def __init__(self, kind: str, backlog_limit: int = 20, identity: str | None = None,
                 ) -> None:
        self.kind = kind
        self.identity = identity
        self.backlog: Backlog[Frame] = Backlog(limit=backlog_limit)
        self.texts: deque[str] = deque()
        self.close: tuple[int, str] | None = None
        self.last_seq = -1              # newest chunk queued or written for this listener
        self.write: Write | None = None  # set once the connection is streaming
        # Its socket, for the fast set's direct sends (None: write() only). Whoever hands
        # it over keeps the transport's high-water mark at 0 and takes it back (``sock =
        # None`` after leaving the feed) before the transport closes the descriptor.
        self.sock: socket.socket | None = None
        self.paused = False             # its transport is above its high-water mark
        self.feed: Feed | None = None
        self.on_end: Callable[[], None] | None = None
        self.fast_since = 0             # feed.chunks when it entered the fast set

    def keeping_up(self) -> bool:
        """Nothing queued, nothing to announce, socket accepting: the fast set's rule."""
        return (self.write is not None and not self.paused and not self.texts
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

    def streaming(self, write: Write, first: bytes = b"",
                  sock: socket.socket | None = None) -> None:
        """The connection is ready for the stream: write ``first`` (e.g. the response head
        and hello) and what is queued, as one write, then go fast (sent to through
        ``sock`` if given, see the module's docstring)."""
        self.write = write
        self.sock = sock
        self.drain(first)

    def pause(self) -> None:
        """Its transport passed the high-water mark: queue from now on."""
        self.paused = True
        self.sync()

    def resume(self) -> None:
        """Its transport drained below the low-water mark: write the backlog out."""
        self.paused = False
        self.drain()

    def push_frame(self, frame: Frame) -> int:
        """One live chunk while not in the fast set: WRITTEN, QUEUED or DUPLICATE."""
        if frame.seq <= self.last_seq:
            return DUPLICATE  # already queued as catch-up (a join while chunks were held)
        self.last_seq = frame.seq
        self._queue(frame)
        return self.drain()

    def push_frames(self, frames: list[Frame]) -> int:
        """Several live chunks at once (a coalesced flush): how many were written now."""
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

    def push_text(self, text: str) -> bool:
        """Queue a text frame of this listener's own (and write it now if it can)."""
        if self.kind != "ws":
            return False  # state and levels do not travel in Ogg
        if len(self.texts) >= MAX_TEXTS:
            self.texts.popleft()
        self.texts.append(text)
        return bool(self.drain())

    def drain(self, first: bytes = b"") -> int:
        """Unless its socket is paused, write everything queued (oldest first, after
        ``first``) as one write — the backlog is bounded, and the write itself pauses the
        listener if it fills the buffer. Returns WRITTEN if the listener is back in the
        fast set, else QUEUED."""
        write = self.write
        if write is not None and self.close is None:
            try:
                out = [first] if first else []
                if not self.paused:
                    self._take_all(out)
                if out:
                    write(b"".join(out))
            except Exception:  # its transport is already closed: it is on its way out
                self.paused = True
        self.sync()
        return WRITTEN if self.keeping_up() else QUEUED

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
