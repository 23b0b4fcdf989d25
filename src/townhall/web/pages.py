"""The HTML pages of the web app, rendered from a snapshot: no I/O, unit-tested as strings.

Every page is the same shell (``page.html``): the app's module script and stylesheet under
the build's versioned URL, a config block and, on a public Space's page, the snapshot as a
non-executing JSON block, so the page costs the api nothing to show. Link previews (Open
Graph, Twitter cards) read the ``<meta>`` tags; the first paint is server-rendered too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

from townhall.room.snapshot import REACTIONS, Space, public_view

BRAND = "townhall"


def build_hash(static: Path) -> str:
    """A short digest of every static file: a new build gets new asset URLs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in static.rglob("*") if p.is_file()):
        digest.update(path.relative_to(static).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def json_block(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    survives, so no ``</script>`` or comment opener can end the block early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def state_line(snap: Space) -> str:
    """The state in words: "Live now · 12,345 listening", "Scheduled for …", or "Ended"."""
    if snap.state == "live":
        line = f"Live now · {snap.listeners:,} listening"
        return line + " · recording" if snap.recording is True else line
    if snap.state == "scheduled":
        if not snap.scheduled_start:
            return "Scheduled"
        try:
            when = datetime.fromisoformat(snap.scheduled_start.replace("Z", "+00:00"))
        except ValueError:
            return "Scheduled"
        return f"Scheduled for {when.astimezone(UTC):%a %d %b %Y, %H:%M} UTC"
    if snap.finished is not None and snap.finished.state != "expired":
        return "Ended · replay available"
    return "Ended"


@dataclass(frozen=True)
class Page:
    """What one rendered page needs besides its snapshot."""

    static: str           # the versioned asset prefix, e.g. /static/3f2a9c1b7d0e
    open_mode: bool       # guest sessions on (the sign-in prompt offers a name form)
    public_url: str = ""  # --public-url, for og:url


class Renderer:
    """Renders the shell for the home page, a Space's page, its embed and the 404 page."""

    def __init__(self, template: str, page: Page) -> None:
        self.template = Template(template)
        self.page = page

    def _render(self, *, title: str, meta: list[tuple[str, str, str]], main: str,
                view: str, snapshot: Space | None = None,
                clip: str | None = None) -> str:
        config: dict[str, Any] = {"open": self.page.open_mode, "view": view,
                                  "static": self.page.static,
                                  "public_url": self.page.public_url.rstrip("/"),
                                  # the one list (townhall.room.snapshot)
                                  "reactions": list(REACTIONS)}
        if clip is not None:
            config["clip"] = clip
        tags = "\n".join(f'<meta {kind}="{escape(key)}" content="{escape(value)}">'
                         for kind, key, value in meta)
        block = "" if snapshot is None else \
            f'<script type="application/json" id="snapshot">{json_block(public_view(snapshot))}' \
            "</script>"
        return self.template.substitute(
            title=escape(title), meta=tags, static=escape(self.page.static), main=main,
            view=escape(view), config=json_block(config), snapshot=block)

    def home(self) -> str:
        """The home page: the list of Spaces is drawn by the app."""
        return self._render(title=BRAND, meta=[("name", "description", "Live audio rooms")],
                            main="<p>Loading…</p>", view="home")

    def docs(self) -> str:
        """The API reference page, drawn by the app from /openapi.json."""
        return self._render(title=f"{BRAND} · API reference", meta=[], view="docs",
                            main="<h1>API reference</h1><p>Loading /openapi.json…</p>")

    def not_found(self, view: str = "space") -> str:
        """The page for an unknown *and* a private Space: the same bytes, so the answer
        tells nobody whether a private Space exists."""
        main = ("<h1>This Space isn't here</h1><p>It may have been private, or the link may "
                'be mistyped.</p><p><a href="/">See what is live</a></p>')
        return self._render(title=BRAND, meta=[("name", "robots", "noindex")], main=main,
                            view=view)

    def space(self, snap: Space, *, embed: bool = False) -> str:
        """A public Space's page (or its compact embed): previews, first paint, snapshot."""
        title, host = snap.title or "A Space", snap.host.name
        line = state_line(snap)
        description = f"{line} · Hosted by {host}" if host else line
        if snap.description:
            description += f" · {snap.description}"
        meta = [("property", "og:title", title), ("property", "og:description", description),
                ("property", "og:type", "website"), ("property", "og:site_name", BRAND),
                ("name", "twitter:card", "summary"), ("name", "twitter:title", title),
                ("name", "twitter:description", description),
                ("name", "description", description)]
        if self.page.public_url:
            url = f"{self.page.public_url.rstrip('/')}/s/{snap.id}"
            meta.insert(3, ("property", "og:url", url))
        speakers = "".join(f"<li>{escape(p.name)}</li>" for p in snap.stage)
        main = (f"<h1>{escape(title)}</h1><p class=\"meta\">Hosted by {escape(host)}</p>"
                f"<p class=\"meta\">{escape(line)}</p>"
                + (f'<ul class="stage-plain">{speakers}</ul>' if speakers else ""))
        return self._render(title=f"{title} · {BRAND}", meta=meta, main=main,
                            view="embed" if embed else "space", snapshot=snap)

    def clip(self, snap: Space, clip: str) -> str:
        """A clip's share page: previews of the clip (``og:audio`` with --public-url) and
        a player that works before the app's script has run."""
        title, host = snap.title or "A Space", snap.host.name
        heading = f"A clip from {title}"
        description = f"Hosted by {host} on {BRAND}" if host else f"On {BRAND}"
        meta = [("property", "og:title", heading), ("property", "og:description", description),
                ("property", "og:type", "website"), ("property", "og:site_name", BRAND),
                ("name", "twitter:card", "summary"), ("name", "twitter:title", heading),
                ("name", "twitter:description", description),
                ("name", "description", description)]
        if self.page.public_url:
            base = self.page.public_url.rstrip("/")
            meta += [("property", "og:url", f"{base}/c/{clip}"),
                     ("property", "og:audio", f"{base}/clips/{clip}.m4a"),
                     ("property", "og:audio:type", "audio/mp4")]
        main = (f"<h1>{escape(heading)}</h1><p class=\"meta\">Hosted by {escape(host)}</p>"
                f'<audio controls preload="metadata" src="/clips/{escape(clip)}.opus"></audio>')
        return self._render(title=f"{heading} · {BRAND}", meta=meta, main=main, view="clip",
                            snapshot=snap, clip=clip)
