"""Security headers for every response, and redirects that never echo the Host header.

A small ASGI middleware: HTML pages get a Content-Security-Policy without inline script or
style and refuse framing (``frame-ancestors 'none'`` plus ``X-Frame-Options: DENY``), except
the embeddable player under ``/embed/``, which any site may frame. Every response gets
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``. A redirect whose
``Location`` is absolute on the request's own Host (Starlette's trailing-slash redirect
builds one from the Host header) is made relative, so ``Host: evil.example`` never comes
back as a link. See docs/web.md.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townhall.settings import Settings

FRAMABLE_PREFIX = "/embed/"
# Origins of edges on other hosts (roles split): set to lock connect-src down to them.
EDGE_ORIGINS_ENV = "TOWNHALL_EDGE_ORIGINS"


def edge_sources(settings: Settings, env: dict[str, str] | None = None) -> list[str]:
    """Where the page may open sockets and Ogg streams besides its own origin.

    A process that runs the edge role serves /ws itself ('self'). An api-only process sends
    pages to edges named by GET /listen, which may join at any time; unless the operator
    lists their origins, any http(s)/ws(s) origin is allowed (script-src stays 'self', so
    an injected script, the thing connect-src would contain, cannot run in the first place).
    """
    configured = (env if env is not None else os.environ).get(EDGE_ORIGINS_ENV, "")
    listed = [o.strip().rstrip("/") for o in configured.split(",") if o.strip()]
    if listed:
        out: list[str] = []
        for origin in listed:
            parts = urlsplit(origin)
            out.append(origin)
            if parts.scheme in ("http", "https"):  # the same edge's WebSocket URL
                ws = "wss" if parts.scheme == "https" else "ws"
                out.append(f"{ws}://{parts.netloc}")
        return out
    if "edge" in settings.roles:
        return []
    return ["https:", "wss:", "http:", "ws:"]


def content_security_policy(edges: list[str], *, framable: bool) -> str:
    """The CSP of one HTML page."""
    remote = " ".join(["'self'", *edges])
    ancestors = "*" if framable else "'none'"
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {remote}",
        f"media-src {remote}",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        f"frame-ancestors {ancestors}",
    ])


def relative_location(location: str, host: str) -> str | None:
    """``location`` made relative when it is absolute on ``host``; None to leave it."""
    parts = urlsplit(location)
    if not parts.netloc or parts.netloc.lower() != host.lower():
        return None
    path = parts.path or "/"
    if path.startswith("//"):  # would read as a scheme-relative URL to another host
        path = "/" + path.lstrip("/")
    return path + (f"?{parts.query}" if parts.query else "")


class SecurityHeaders:
    """Adds the headers above to every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        edges = edge_sources(settings)
        self.csp = content_security_policy(edges, framable=False)
        self.csp_framable = content_security_policy(edges, framable=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to every HTTP answer (CSP on HTML pages, framing only where allowed)
        and make a redirect to this host relative."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framable = str(scope.get("path", "")).startswith(FRAMABLE_PREFIX)
        host = ""
        for key, value in scope.get("headers") or []:
            if key == b"host":
                host = value.decode("latin-1")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = \
                        self.csp_framable if framable else self.csp
                    if not framable:
                        headers["X-Frame-Options"] = "DENY"
                location = headers.get("location")
                if location and 300 <= int(message["status"]) < 400:
                    fixed = relative_location(location, host)
                    if fixed is not None:
                        headers["location"] = fixed
            await send(message)

        await self.app(scope, receive, send_with_headers)
