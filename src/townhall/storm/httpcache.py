"""A browser-like HTTP cache: fresh entries reused, stale ones revalidated (no I/O).

Two uses in a storm: each viewer's own cache (ETag only: a repeat carries If-None-Match,
so the previous web app's 2 s poll costs what it cost a browser), and one shared cache per
worker for static assets (max-age / immutable honoured, as a browser's disk cache or a
CDN in front would) so viewers after the first do not refetch a versioned asset.
Time is passed in (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def cache_control(header: str | None) -> dict[str, int | None]:
    """Directives of a Cache-Control header, lower-cased; numeric values as int."""
    out: dict[str, int | None] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        try:
            out[name] = int(value.strip().strip('"')) if value else None
        except ValueError:
            out[name] = None
    return out


def freshness(headers: Mapping[str, str]) -> float:
    """Seconds a stored response may be reused without asking (0: revalidate every time)."""
    cc = cache_control(headers.get("cache-control"))
    if "no-store" in cc or "no-cache" in cc:
        return 0.0
    if "immutable" in cc:
        return float("inf")
    age = cc.get("max-age")
    return float(age) if age else 0.0


@dataclass
class Entry:
    """A stored response: its validator, body and until when it is fresh."""

    etag: str | None
    body: bytes
    fresh_until: float


@dataclass
class HttpCache:
    """Stores 200 responses by URL; says whether to reuse, revalidate or fetch."""

    honour_freshness: bool = True
    entries: dict[str, Entry] = field(default_factory=dict)
    hits: int = 0  # answered from the cache with no request at all

    def fresh(self, url: str, now: float) -> bytes | None:
        """The stored body if it may be reused without a request (counted as a hit)."""
        e = self.entries.get(url)
        if e is None or not self.honour_freshness or now >= e.fresh_until:
            return None
        self.hits += 1
        return e.body

    def request_headers(self, url: str) -> dict[str, str]:
        """Conditional headers for a request of url (If-None-Match when we hold an ETag)."""
        e = self.entries.get(url)
        return {"If-None-Match": e.etag} if e is not None and e.etag else {}

    def response(self, url: str, status: int, headers: Mapping[str, str], body: bytes,
                 now: float) -> bytes | None:
        """Fold an answer in; returns the body to use (the stored one on 304), None if none."""
        if status == 304:
            e = self.entries.get(url)
            if e is None:
                return None
            e.fresh_until = now + freshness(headers)
            return e.body
        if status != 200:
            return None
        if "no-store" not in cache_control(headers.get("cache-control")):
            self.entries[url] = Entry(headers.get("etag"), body, now + freshness(headers))
        return body
