"""Spaces for tests: a document written the way a test reads best (JSON keys,
internal ones with their ``_``), filled up to a whole snapshot and decoded by the one
codec (townhall.room.snapshot), so tests build what the bucket would hold."""

from __future__ import annotations

from typing import Any

from townhall.room.snapshot import Space, from_doc

BASE: dict[str, Any] = {
    "id": "abcdefghij", "title": "T", "description": "", "state": "live", "version": 1,
    "private": False, "host": {"id": "ada", "name": "Ada"}, "created_at": 0.0}


def space(doc: dict[str, Any] | None = None, **keys: Any) -> Space:
    """A Space from ``doc`` and ``keys`` (JSON keys), the rest of a minimal live one."""
    return from_doc({**BASE, **(doc or {}), **keys})
