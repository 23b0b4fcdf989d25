"""The web app's pages and headers as plain functions: previews, escaping, the CSP."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.snapshots import space
from townhall.room.snapshot import Space
from townhall.settings import Settings
from townhall.web.headers import content_security_policy, edge_sources, relative_location
from townhall.web.pages import Page, Renderer, build_hash, json_block, state_line
from townhall.web.routes import STATIC, TEMPLATE

HOSTILE = 'Evil </script><script>alert(1)</script> "quoted" & <!--'


def renderer(public_url: str = "") -> Renderer:
    return Renderer(TEMPLATE.read_text(encoding="utf-8"),
                    Page(static="/static/abcdef012345", open_mode=False, public_url=public_url))


def snap(**over: object) -> Space:
    base: dict[str, object] = {
        "id": "k3v9x2m4qa", "title": "Town hall", "description": "", "state": "live",
        "version": 3, "private": False, "host": {"id": "ada", "name": "Ada"},
        "scheduled_start": None, "stage": [{"id": "ada", "name": "Ada", "role": "host"}],
        "requests": [], "invites": [], "listeners": 12345, "reactions": {}}
    return space(base | over)


def test_state_lines() -> None:
    assert state_line(snap()) == "Live now · 12,345 listening"
    assert state_line(snap(state="scheduled", scheduled_start="2026-12-05T20:00:00Z")) \
        == "Scheduled for Sat 05 Dec 2026, 20:00 UTC"
    assert state_line(snap(state="scheduled")) == "Scheduled"
    assert state_line(snap(state="ended")) == "Ended"
    assert state_line(snap(recording=True)) == "Live now · 12,345 listening · recording"
    assert state_line(snap(state="ended", recording={"url": "/replay/x.opus"})) \
        == "Ended · replay available"


def test_json_block_cannot_close_its_script_element() -> None:
    text = json_block({"t": HOSTILE})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": HOSTILE}


def test_space_page_carries_previews_escaped() -> None:
    html = renderer("https://live.example.org/").space(snap(title=HOSTILE,
                                                            host={"id": "x", "name": HOSTILE}))
    # The hostile text never appears raw: no second <script> opens, no attribute breaks.
    assert html.count("<script") == 3  # app.js, config, snapshot: nothing injected
    assert "alert(1)</script>" not in html and '"quoted"' not in html
    og = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">', html))
    assert og["og:title"].startswith("Evil &lt;/script&gt;")
    assert og["og:description"].startswith("Live now · 12,345 listening · Hosted by Evil")
    assert og["twitter:card"] == "summary" and og["og:type"] == "website"
    assert og["og:url"] == "https://live.example.org/s/k3v9x2m4qa"
    block = re.search(r'<script type="application/json" id="snapshot">(.*?)</script>', html)
    assert block is not None and json.loads(block.group(1))["title"] == HOSTILE


def test_no_og_url_without_a_public_url() -> None:
    assert "og:url" not in renderer().space(snap())


def test_not_found_page_names_nothing() -> None:
    html = renderer().not_found()
    assert 'id="snapshot"' not in html and "og:title" not in html
    assert "<title>townhall</title>" in html


def test_build_hash_changes_with_any_asset(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("a")
    first = build_hash(tmp_path)
    (tmp_path / "style.css").write_text("b")
    assert build_hash(tmp_path) != first and re.fullmatch(r"[0-9a-f]{12}", first)
    assert re.fullmatch(r"[0-9a-f]{12}", build_hash(STATIC))


def test_csp_has_no_inline_and_frames_only_the_embed() -> None:
    strict = content_security_policy([], framable=False)
    assert "script-src 'self';" in strict and "style-src 'self';" in strict
    assert "unsafe-inline" not in strict and "frame-ancestors 'none'" in strict
    assert "frame-ancestors *" in content_security_policy([], framable=True)


def test_edge_sources() -> None:
    assert edge_sources(Settings(), env={}) == []  # the edge is this origin
    split = Settings(roles=("api", "stage"))
    assert edge_sources(split, env={}) == ["https:", "wss:", "http:", "ws:"]
    assert edge_sources(split, env={"TOWNHALL_EDGE_ORIGINS": "https://e1.example/, "
                                    "http://10.0.0.5:8081"}) == [
        "https://e1.example", "wss://e1.example", "http://10.0.0.5:8081", "ws://10.0.0.5:8081"]


def test_relative_location_never_echoes_the_host() -> None:
    assert relative_location("http://evil.example/api/v1/spaces?x=1", "evil.example") \
        == "/api/v1/spaces?x=1"
    assert relative_location("http://evil.example//other.example/x", "evil.example") \
        == "/other.example/x"
    assert relative_location("/already/relative", "evil.example") is None
    assert relative_location("https://elsewhere.example/", "evil.example") is None


def test_the_reactions_list_is_one_python_list_handed_to_the_app() -> None:
    from townhall.api.models import ReactionIn
    from townhall.room.snapshot import REACTIONS

    found = re.search(r'id="config">(.*?)</script>', renderer().home(), re.S)
    assert found is not None
    config = json.loads(found.group(1))
    assert config["reactions"] == list(REACTIONS)
    assert ReactionIn.model_json_schema()["properties"]["emoji"]["enum"] == list(REACTIONS)
    app = (STATIC / "app.js").read_text(encoding="utf-8")
    assert not [e for e in REACTIONS if e in app]  # no second copy in the app


def test_clip_page_carries_its_own_previews_escaped() -> None:
    html = renderer("https://live.example.org").clip(
        snap(title=HOSTILE, state="ended", host={"id": "x", "name": "Ada"}),
        "k3v9x2m4qa-0123456789")
    assert html.count("<script") == 3 and "alert(1)</script>" not in html
    og = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)">', html))
    assert og["og:title"].startswith("A clip from Evil &lt;/script&gt;")
    assert og["og:url"] == "https://live.example.org/c/k3v9x2m4qa-0123456789"
    assert og["og:audio"] == "https://live.example.org/clips/k3v9x2m4qa-0123456789.m4a"
    assert og["twitter:card"] == "summary"
    assert '<audio controls preload="metadata" src="/clips/k3v9x2m4qa-0123456789.opus">' in html
    config = re.search(r'<script type="application/json" id="config">(.*?)</script>', html)
    assert config is not None and json.loads(config.group(1))["clip"] == "k3v9x2m4qa-0123456789"
    assert state_line(snap(state="ended", recording={"state": "expired"})) == "Ended"
