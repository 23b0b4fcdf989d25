"""Every HTTP request a simulated viewer makes, by kind, and which kinds hit the api (no I/O)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit

PAGE = "page"          # the HTML of /s/<id> (or any page that is not an asset or the api)
ASSET = "asset"        # /static/... (scripts, styles, modules)
SNAPSHOT = "snapshot"  # GET /api/v1/spaces/<id>
LIST = "list"          # GET /api/v1/spaces
API_OTHER = "api_other"  # any other /api/ request (where to listen, sessions, ...)
KINDS = (PAGE, ASSET, SNAPSHOT, LIST, API_OTHER)
API_KINDS = frozenset({SNAPSHOT, LIST, API_OTHER})
API_PREFIX = "/api/v1/"


def classify(method: str, url: str) -> str:
    """The kind of one request, from its method and URL (absolute or a path)."""
    path = urlsplit(url).path.rstrip("/")
    if path.startswith("/static/"):
        return ASSET
    if path.startswith(API_PREFIX.rstrip("/")):
        parts = path[len(API_PREFIX):].split("/") if path.startswith(API_PREFIX) else []
        if method.upper() == "GET" and parts[:1] == ["spaces"]:
            if len(parts) == 1:
                return LIST
            if len(parts) == 2:
                return SNAPSHOT
        return API_OTHER
    return PAGE


class ViewerRequests:
    """One viewer's requests by kind (requests sent, so 304s count and cache hits do not)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, method: str, url: str) -> str:
        """Count one request; returns its kind."""
        kind = classify(method, url)
        self.counts[kind] += 1
        return kind

    def api(self) -> int:
        """Requests that reached the api's routes."""
        return sum(n for k, n in self.counts.items() if k in API_KINDS)

    def as_dict(self) -> dict[str, int]:
        """Counts for every kind (0 where none), for a report."""
        return {k: self.counts.get(k, 0) for k in KINDS}


def per_viewer(totals: list[dict[str, int]]) -> dict[str, dict[str, float]]:
    """Mean and max per viewer of each kind, over viewers' final counts."""
    n = max(1, len(totals))
    out: dict[str, dict[str, float]] = {}
    for k in (*KINDS, "api"):
        vals = [sum(t.get(x, 0) for x in API_KINDS) if k == "api" else t.get(k, 0)
                for t in totals]
        out[k] = {"mean": round(sum(vals) / n, 2), "max": max(vals, default=0)}
    return out
