"""What a browser fetches for a page: assets named by the HTML, an embedded snapshot (no I/O)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

# <link rel=...> values a browser fetches while loading the page (icons and prefetch hints
# are left out: they are not on the path to first audio).
FETCHED_RELS = frozenset({"stylesheet", "modulepreload", "preload"})
SNAPSHOT_ID = "snapshot"
# Static ES module imports: `import x from "..."`, `import {a} from '...'`, `import "..."`,
# `export ... from "..."`. Dynamic import() is left out: a browser fetches it only when run.
_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"`;]*?(?:\bfrom\s*)?["']([^"']+)["']""",
                     re.M)


@dataclass
class PageRefs:
    """The assets a page makes the browser fetch, in document order, and its snapshot."""

    assets: list[str] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)  # assets that are ES modules
    snapshot: dict[str, Any] | None = None


class _Parser(HTMLParser):
    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.refs = PageRefs()
        self._in_snapshot = False
        self._snapshot_text: list[str] = []

    def _add(self, ref: str | None, module: bool = False) -> None:
        url = resolve(self.page_url, ref)
        if url is None:
            return
        if url not in self.refs.assets:
            self.refs.assets.append(url)
        if module:
            self.refs.modules.add(url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs}
        if tag == "script":
            kind = (a.get("type") or "").lower()
            if kind == "application/json" and a.get("id") == SNAPSHOT_ID:
                self._in_snapshot = True
            elif a.get("src"):
                self._add(a["src"], module=kind == "module")
        elif tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            if rels & FETCHED_RELS:
                self._add(a.get("href"), module="modulepreload" in rels)

    def handle_data(self, data: str) -> None:
        if self._in_snapshot:
            self._snapshot_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_snapshot:
            self._in_snapshot = False
            try:
                body = json.loads("".join(self._snapshot_text))
            except ValueError:
                return  # unreadable: the page would fetch the snapshot instead
            if isinstance(body, dict):
                self.refs.snapshot = body


def resolve(base: str, ref: str | None) -> str | None:
    """ref as an absolute http(s) URL against base, without fragment; None if not fetchable."""
    if not ref or ref.startswith(("data:", "blob:", "javascript:")):
        return None
    url = urljoin(base, ref.strip())
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    return parts._replace(fragment="").geturl()


def parse_page(html: str, page_url: str) -> PageRefs:
    """The assets (script src, stylesheet/modulepreload/preload links) and embedded snapshot."""
    p = _Parser(page_url)
    p.feed(html)
    p.close()
    return p.refs


def module_imports(js: str, js_url: str) -> list[str]:
    """The static imports of an ES module, as absolute URLs (a browser fetches them too)."""
    out: list[str] = []
    for ref in _IMPORT.findall(js):
        url = resolve(js_url, ref)
        if url is not None and url not in out:
            out.append(url)
    return out
