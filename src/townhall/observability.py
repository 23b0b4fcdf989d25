"""Structured logs, /metrics and /healthz shared by the HTTP roles."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townhall.context import Context

HTTP_REQUESTS = Counter("townhall_http_requests_total", "HTTP requests",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("townhall_http_request_seconds", "HTTP request latency",
                         ["method", "route"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extras."""

    _skip = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """One log record as one JSON line."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip:
                out[key] = value if isinstance(value, int | float | str | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", role: str = "") -> None:
    """JSON log lines on stderr at ``level``, tagged with ``role``; aiortc's, aioice's and
    nats' chatter only from warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aioice", "aiortc", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if role:
        old = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            rec = old(*args, **kwargs)
            rec.role = role
            return rec

        logging.setLogRecordFactory(factory)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count it by route and status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, name, str(status)).inc()
            HTTP_LATENCY.labels(method, name).observe(time.perf_counter() - start)


async def metrics(_: Request) -> Response:
    """``GET /metrics``: Prometheus' text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def healthz_endpoint(ctx: Context) -> Any:
    """``GET /healthz``: NATS connected and every role's own checks; 503 when one fails."""
    async def healthz(_: Request) -> JSONResponse:
        checks = {"nats": ctx.bus.connected}
        checks.update({name: bool(check()) for name, check in ctx.health.items()})
        ok = all(checks.values())
        return JSONResponse({"ok": ok, "checks": checks, "roles": list(ctx.settings.roles),
                             "node": ctx.settings.node_id}, status_code=200 if ok else 503)

    return healthz
