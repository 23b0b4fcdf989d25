"""The share page and its cache story over plain HTTP: what a crawler, a CDN or a reverse
proxy sees (no browser). The browser side is tests/web/test_share_page.py."""

from __future__ import annotations

import json
import re

import httpx

from tests.conftest import Served


def live_public(served: Served, title: str = "Crawlable hall") -> tuple[str, str]:
    token = served.session("Grace Host")
    return served.live_space(token, title, description="Q&A <live>"), token


def meta(html: str) -> dict[str, str]:
    return dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">', html))


def test_share_page_previews_and_embeds_the_snapshot(townhall_shared: Served) -> None:
    space, _ = live_public(townhall_shared)
    r = httpx.get(f"{townhall_shared.url}/s/{space}", timeout=10)
    assert r.status_code == 200
    tags = meta(r.text)
    assert tags["og:title"] == "Crawlable hall"
    assert tags["og:description"].startswith("Live now · ")
    assert "Hosted by Grace Host" in tags["og:description"]
    assert "Q&amp;A &lt;live&gt;" in tags["og:description"]
    assert tags["twitter:card"] == "summary" and tags["og:type"] == "website"
    assert "<title>Crawlable hall · townhall</title>" in r.text
    block = re.search(r'<script type="application/json" id="snapshot">(.*?)</script>', r.text)
    assert block is not None
    snap = json.loads(block.group(1))
    assert snap["id"] == space and snap["state"] == "live"
    assert not [k for k in snap if k.startswith("_")], "internal keys never leave the api"
    head = httpx.head(f"{townhall_shared.url}/s/{space}", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_pages_and_snapshots_are_cacheable(townhall_shared: Served) -> None:
    space, token = live_public(townhall_shared, "Cached hall")
    c = httpx.Client(base_url=townhall_shared.url, timeout=10)
    page = c.get(f"/s/{space}")
    cc = page.headers["cache-control"]
    assert cc.startswith("public,") and "s-maxage=" in cc and "stale-while-revalidate=" in cc
    assert c.get(f"/s/{space}", headers={"If-None-Match": page.headers["etag"]}).status_code \
        == 304
    snap = c.get(f"/api/v1/spaces/{space}")
    assert snap.headers["cache-control"].startswith("public,")
    assert c.get(f"/api/v1/spaces/{space}",
                 headers={"If-None-Match": snap.headers["etag"]}).status_code == 304
    # An authorized view is nobody else's: no shared cache keeps it.
    mine = c.get(f"/api/v1/spaces/{space}", headers={"Authorization": f"Bearer {token}"})
    assert mine.headers["cache-control"] == "private, no-store"


def test_assets_are_versioned_and_immutable(townhall_shared: Served) -> None:
    c = httpx.Client(base_url=townhall_shared.url, timeout=10)
    html = c.get("/").text
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {r.rsplit("/", 1)[1] for r in refs} == {"app.js", "style.css"}
    for ref in refs:
        assert re.fullmatch(r"/static/[0-9a-f]{12}/[a-z.]+", ref), ref
        r = c.get(ref)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    app_js = c.get(refs[0] if refs[0].endswith(".js") else refs[1]).text
    # Modules import each other relatively, so they stay within one build's URL.
    assert 'from "./player.js"' in app_js and "/static/player.js" not in app_js
    version = refs[0].split("/")[2]
    player = c.get(f"/static/{version}/player.js").text
    assert "/static/worklet.js" not in player
    # An older build's URL (a page cached before a deploy) gets today's file, not cached.
    stale = c.get("/static/000000000000/app.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert c.get(f"/static/{version}/../routes.py").status_code == 404
