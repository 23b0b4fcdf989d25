"""The last few seconds of a Space's chunks, by sequence number (Sans-I/O)."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_CAPACITY = 100  # 100 chunks of 100 ms = the last ~10 s


class Ring(Generic[T]):
    """Keeps the newest ``capacity`` items with consecutive-or-increasing sequence numbers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[tuple[int, T]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def first_seq(self) -> int | None:
        """Oldest sequence still held, or None when empty."""
        return self._items[0][0] if self._items else None

    @property
    def last_seq(self) -> int | None:
        """Newest sequence held, or None when empty."""
        return self._items[-1][0] if self._items else None

    def add(self, seq: int, item: T) -> bool:
        """Append a chunk; a sequence at or below the newest (duplicate, reorder) is refused."""
        if self._items and seq <= self._items[-1][0]:
            return False
        self._items.append((seq, item))
        return True

    def since(self, seq: int) -> list[tuple[int, T]]:
        """Every held item with sequence >= ``seq``, oldest first."""
        if not self._items or seq > self._items[-1][0]:
            return []
        return [(s, it) for s, it in self._items if s >= seq]

    def holds(self, seq: int) -> bool:
        """Whether the ring can resume exactly from ``seq`` (nothing before it missing)."""
        first, last = self.first_seq, self.last_seq
        return first is not None and last is not None and first <= seq <= last + 1
