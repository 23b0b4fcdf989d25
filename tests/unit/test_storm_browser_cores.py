"""Browser storm cores: what a page makes a browser fetch, caching, request kinds, rates."""

from __future__ import annotations

from townhall.storm.browser import socket_url
from townhall.storm.httpcache import HttpCache, cache_control, freshness
from townhall.storm.page import module_imports, parse_page
from townhall.storm.rates import per_viewer_minute, viewer_minutes
from townhall.storm.requestkinds import ViewerRequests, classify, per_viewer

BASE = "http://127.0.0.1:8080"

TODAY = """<!doctype html><html><head>
<link rel="stylesheet" href="/static/style.css">
<script type="module" src="/static/app.js"></script>
</head><body><main id="main"><p>Loading…</p></main></body></html>"""

NEW = """<!doctype html><html><head>
<title>Big night · townhall</title>
<meta property="og:title" content="Big night">
<link rel="icon" href="/static/3f2a/icon.svg">
<link rel="modulepreload" href="/static/3f2a/player.js">
<link rel=stylesheet href="../static/3f2a/style.css">
<script type="module" src="/static/3f2a/app.js"></script>
<script type="application/json" id="snapshot">{"id": "abc", "state": "live",
 "title": "Big night \\u0026 more \\u003c/script>",
 "edges": [{"ws": "/ws/abc", "ogg": "/listen/abc.opus"}]}
</script>
<script type="application/json" id="other">{"not": "the snapshot"}</script>
<script src="data:text/javascript,1"></script>
</head><body></body></html>"""


def test_todays_page_names_its_style_and_module_and_embeds_no_snapshot() -> None:
    refs = parse_page(TODAY, f"{BASE}/s/abc")
    assert refs.assets == [f"{BASE}/static/style.css", f"{BASE}/static/app.js"]
    assert refs.modules == {f"{BASE}/static/app.js"}
    assert refs.snapshot is None


def test_new_page_assets_resolved_and_snapshot_embedded() -> None:
    # script content is raw text: JSON escapes (not entities) carry < and &
    refs = parse_page(NEW, f"{BASE}/s/abc")
    # the icon is not on the way to audio; data: URLs are not requests
    assert refs.assets == [f"{BASE}/static/3f2a/player.js", f"{BASE}/static/3f2a/style.css",
                           f"{BASE}/static/3f2a/app.js"]
    assert refs.modules == {f"{BASE}/static/3f2a/player.js", f"{BASE}/static/3f2a/app.js"}
    assert refs.snapshot is not None and refs.snapshot["title"] == "Big night & more </script>"
    assert refs.snapshot["edges"][0]["ws"] == "/ws/abc"


def test_unreadable_embedded_snapshot_means_fetch_it() -> None:
    html = '<script type="application/json" id="snapshot">{broken</script>'
    assert parse_page(html, f"{BASE}/s/abc").snapshot is None


def test_module_imports_static_only() -> None:
    js = """// a module
import { Player } from "/static/player.js";
import "./side-effect.js";
export { x } from './re-export.js';
import * as ns from "/static/player.js";
const later = () => import("/static/lazy.js");
const s = "import nothing from 'here'";
"""
    assert module_imports(js, f"{BASE}/static/app.js") == [
        f"{BASE}/static/player.js", f"{BASE}/static/side-effect.js",
        f"{BASE}/static/re-export.js"]


def test_cache_control_and_freshness() -> None:
    assert cache_control("public, max-age=60, stale-while-revalidate=30") == {
        "public": None, "max-age": 60, "stale-while-revalidate": 30}
    assert freshness({"cache-control": "public, max-age=31536000, immutable"}) == float("inf")
    assert freshness({"cache-control": "max-age=5"}) == 5
    assert freshness({"cache-control": "no-cache, max-age=5"}) == 0
    assert freshness({}) == 0


def test_shared_cache_reuses_fresh_assets_and_revalidates_stale_ones() -> None:
    c = HttpCache()
    url = f"{BASE}/static/3f2a/app.js"
    assert c.fresh(url, 0) is None and c.request_headers(url) == {}
    c.response(url, 200, {"etag": '"v1"', "cache-control": "max-age=10"}, b"js", now=0)
    assert c.fresh(url, 5) == b"js" and c.hits == 1        # no request within max-age
    assert c.fresh(url, 10) is None                          # stale: ask again...
    assert c.request_headers(url) == {"If-None-Match": '"v1"'}  # ...conditionally
    assert c.response(url, 304, {"cache-control": "max-age=10"}, b"", now=10) == b"js"
    assert c.fresh(url, 15) == b"js"                         # fresh again after the 304


def test_no_store_is_not_kept_and_a_viewer_cache_never_reuses() -> None:
    c = HttpCache()
    c.response("u", 200, {"etag": '"a"', "cache-control": "no-store"}, b"x", now=0)
    assert c.request_headers("u") == {}
    own = HttpCache(honour_freshness=False)
    own.response("s", 200, {"etag": '"7"', "cache-control": "max-age=60"}, b"{}", now=0)
    assert own.fresh("s", 1) is None  # a poll always asks (the previous app's cost)...
    assert own.request_headers("s") == {"If-None-Match": '"7"'}  # ...with its ETag
    assert own.response("s", 304, {}, b"", now=2) == b"{}"
    assert own.response("s", 500, {}, b"oops", now=3) is None


def test_request_kinds() -> None:
    assert classify("GET", f"{BASE}/s/abc") == "page"
    assert classify("GET", f"{BASE}/embed/abc") == "page"
    assert classify("GET", f"{BASE}/static/3f2a/app.js") == "asset"
    assert classify("GET", f"{BASE}/api/v1/spaces/abc") == "snapshot"
    assert classify("GET", f"{BASE}/api/v1/spaces?state=live") == "list"
    assert classify("GET", "/api/v1/spaces/") == "list"
    assert classify("GET", f"{BASE}/api/v1/spaces/abc/listen") == "api_other"
    assert classify("POST", f"{BASE}/api/v1/spaces") == "api_other"
    assert classify("POST", f"{BASE}/api/v1/sessions") == "api_other"


def test_viewer_requests_and_per_viewer_figures() -> None:
    a, b = ViewerRequests(), ViewerRequests()
    for url in ("/s/x", "/static/a.js", "/static/b.css", "/api/v1/spaces/x",
                "/api/v1/spaces/x/listen"):
        a.add("GET", url)
    b.add("GET", "/s/x")
    assert a.api() == 2 and b.api() == 0
    assert a.as_dict() == {"page": 1, "asset": 2, "snapshot": 1, "list": 0, "api_other": 1}
    pv = per_viewer([a.as_dict(), b.as_dict()])
    assert pv["page"] == {"mean": 1.0, "max": 1}
    assert pv["api"] == {"mean": 1.0, "max": 2}
    assert pv["asset"] == {"mean": 1.0, "max": 2}


def _rows(n: int, viewers: int, api: int, dt: float = 1.0) -> list[dict[str, float]]:
    return [{"t": (i + 1) * dt, "dt": dt, "viewers": viewers, "api_requests": api}
            for i in range(n)]


def test_rates_per_viewer_minute_only_after_the_ramp() -> None:
    ramp = [{"t": 1.0, "dt": 1.0, "viewers": 50, "api_requests": 500},
            {"t": 2.0, "dt": 1.0, "viewers": 100, "api_requests": 500}]
    # 100 viewers polling every 2 s: 50 requests a second, 30 per viewer-minute
    steady = [{**r, "t": r["t"] + 2} for r in _rows(60, 100, 50)]
    rows = ramp + steady
    assert viewer_minutes(rows, after_t=2.0) == 100.0
    assert per_viewer_minute(rows, "api_requests", after_t=2.0) == 30.0
    # the row covering (1, 2] is part of the ramp: starting at 1.5 leaves it out too
    assert per_viewer_minute(rows, "api_requests", after_t=1.5) == 30.0
    assert per_viewer_minute(rows, "api_requests", after_t=0.0) != 30.0
    quiet = ramp + [{**r, "t": r["t"] + 2} for r in _rows(30, 100, 0)]
    assert per_viewer_minute(quiet, "api_requests", after_t=2.0) == 0.0


def test_rates_none_without_viewers_or_figures() -> None:
    assert per_viewer_minute(_rows(5, 0, 10), "api_requests", after_t=0) is None
    assert per_viewer_minute(_rows(5, 10, 10), "api_cpu_s", after_t=0) is None
    assert per_viewer_minute([], "api_requests", after_t=0) is None


def test_socket_url_prefers_the_edge_list() -> None:
    page = f"{BASE}/s/abc"
    assert socket_url(page, None, "abc") == "ws://127.0.0.1:8080/ws/abc"
    assert socket_url(page, [{"ws": "/ws/abc"}], "abc") == "ws://127.0.0.1:8080/ws/abc"
    assert socket_url(page, [{"ws": "http://10.0.0.2:9000/ws/abc"}], "abc") == \
        "ws://10.0.0.2:9000/ws/abc"
    assert socket_url("https://th.example/s/abc", [{}, {"ws": "/ws/abc"}], "abc") == \
        "wss://th.example/ws/abc"
    assert socket_url(page, [{"ws": "wss://edge-2.example/ws/abc"}], "abc") == \
        "wss://edge-2.example/ws/abc"


def test_steady_state_starts_when_the_last_page_has_loaded() -> None:
    from townhall.storm.rates import steady_from

    rows = [{"t": float(t), "dt": 1.0, "loading": n, "viewers": 10} for t, n in
            [(1, 5), (2, 3), (3, 1), (4, 0), (5, 2), (6, 0), (7, 0), (8, 0)]]
    assert steady_from(rows, not_before=2.0) == 6.0   # a late load at t=5 moves it on
    assert steady_from(rows, not_before=7.0) == 7.0   # already quiet: the ramp's end
    assert steady_from(rows[:5], not_before=2.0) == 2.0  # never quiet: fall back
    assert steady_from([{"t": 3.0, "dt": 1.0, "viewers": 1}], not_before=2.0) == 3.0
    # pages that stopped loading only because every page had closed: not steady state
    closing = [*rows[:5], {"t": 6.0, "dt": 1.0, "loading": 0, "viewers": 0}]
    assert steady_from(closing, not_before=2.0) == 2.0
