"""Web hardening, as a crawler or an attacker's page sees the raw HTTP (issue 13, item 5):
security headers on every HTML page, framing refused except for the embed, private Spaces
that leak nothing, /docs without a CDN, and redirects that never echo the Host header."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Served

HTML_PAGES = ("/", "/docs", "/s/zzzzzzzzzz")


def public_and_private(served: Served) -> tuple[str, str]:
    token = served.session("Ada Secret-Host")
    with served.client(token) as c:
        public = c.post("/api/v1/spaces", json={"title": "Open hall"}).json()["id"]
        private = c.post("/api/v1/spaces", json={"title": "Board meeting of Acme",
                                                  "private": True}).json()["id"]
        assert c.post(f"/api/v1/spaces/{private}/start").status_code == 200
    return public, private


def test_html_pages_carry_the_security_headers(townhall_shared: Served) -> None:
    public, _ = public_and_private(townhall_shared)
    with townhall_shared.client() as c:
        for path in (*HTML_PAGES, f"/s/{public}"):
            r = c.get(path)
            assert r.headers["content-type"].startswith("text/html"), path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            # No inline script: every <script> is a module file or a JSON data block.
            for tag in re.findall(r"<script[^>]*>", r.text):
                assert 'type="module" src="/static/' in tag \
                    or 'type="application/json"' in tag, (path, tag)
            assert "style=" not in r.text and "<style" not in r.text, path
        api = c.get(f"/api/v1/spaces/{public}")
        assert api.headers["x-content-type-options"] == "nosniff"


def test_only_the_embed_may_be_framed(townhall_shared: Served) -> None:
    public, _ = public_and_private(townhall_shared)
    r = httpx.get(f"{townhall_shared.url}/embed/{public}", timeout=10)
    assert r.status_code == 200
    assert "frame-ancestors *" in r.headers["content-security-policy"]
    assert "x-frame-options" not in r.headers


def test_private_space_page_is_the_unknown_space_page(townhall_shared: Served) -> None:
    _, private = public_and_private(townhall_shared)
    with townhall_shared.client() as c:
        for kind in ("s", "embed"):
            secret = c.get(f"/{kind}/{private}")
            unknown = c.get(f"/{kind}/zzzzzzzzzz")
            assert secret.status_code == unknown.status_code == 404
            assert secret.text == unknown.text
            assert secret.headers["cache-control"] == unknown.headers["cache-control"] \
                == "private, no-store"
            for leak in ("Board meeting", "Acme", "Secret-Host", private, "og:title",
                         'id="snapshot"'):
                assert leak not in secret.text, (kind, leak)
            assert "This Space isn't here" in unknown.text


def test_redirects_never_reflect_the_host_header(townhall_shared: Served) -> None:
    r = httpx.get(f"{townhall_shared.url}/api/v1/spaces/", headers={"Host": "evil.example"},
                  timeout=10)
    assert 300 <= r.status_code < 400, r.status_code
    assert r.headers["location"] == "/api/v1/spaces"
    assert "evil.example" not in r.text


def test_docs_come_from_this_server(townhall_shared: Served) -> None:
    with townhall_shared.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls and all(u.startswith("/") for u in urls), urls
        js = c.get(next(u for u in urls if u.endswith("/app.js")).replace("app.js",
                                                                           "apidocs.js"))
        assert js.status_code == 200 and "openapi.json" in js.text
        assert not re.search(r"https?://", js.text), "the reference page fetches elsewhere"
        assert "swagger" not in page.text.lower() and "cdn" not in page.text.lower()
