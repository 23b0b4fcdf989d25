"""The HTTP application of one process: the roles it runs, plugged into one ASGI app.

Each HTTP role contributes a plug-in module with ``install(app, ctx)``; the app adds what
all of them share: problem+json errors, a body cap, /metrics, /healthz and /openapi.json.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townhall import __version__
from townhall.bus import UNREACHABLE
from townhall.context import Context
from townhall.observability import MetricsMiddleware, healthz_endpoint, metrics
from townhall.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_SCHEMA,
    BadInput,
    Problem,
    TooLarge,
    Unavailable,
    Unprocessable,
)
from townhall.web.headers import SecurityHeaders

log = logging.getLogger(__name__)

# Which plug-in modules each HTTP role brings. A role's module exposes install(app, ctx).
HTTP_PLUGINS: dict[str, list[str]] = {
    "api": ["townhall.api.routes", "townhall.recording.routes", "townhall.recording.hls",
            "townhall.api.whip", "townhall.web.routes", "townhall.api.stageboard",
            "townhall.api.ice", "townhall.api.webhooks", "townhall.api.leaders"],
    "edge": ["townhall.edge.role"],
}
MAX_BODY = 64 * 1024
BUS_RETRY_S = 2  # NATS unanswered: a node re-elected or a route back takes seconds
BUS_WHY = "NATS did not answer in time (bus-unavailable: a partition, a node restarting); " \
          "see Retry-After"
STAGE_QUIET_S = 5.0     # no stage heartbeat for this long: the stage role is down
STAGE_STARTUP_S = 30.0  # ...after its first report, or once it has had this long to start


class ProblemResponse(JSONResponse):
    """An RFC 9457 body in plain ASCII: ``application/problem+json`` carries no charset, and
    clients that guess one (requests does) would garble a detail quoting non-ASCII input."""

    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        """The body as compact ASCII JSON."""
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def problem_response(problem: Problem) -> JSONResponse:
    """A typed refusal as its problem+json response."""
    return ProblemResponse(problem.to_dict(), status_code=problem.status,
                           headers=problem.headers())


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413 once its body passes the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = problem_response(TooLarge(f"request bodies are capped at {self.limit} bytes",
                                              limit=self.limit))
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        if declared is not None or b"transfer-encoding" not in headers:
            # No body, or one the server reads to its declared length and no further.
            await self.app(scope, receive, send)
            return
        # A chunked body has no length to check up front: read it here, bounded, and hand
        # the app the whole of it. (Refusing from inside the app's own read is not
        # possible: FastAPI turns any error while reading a body into a 400.)
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            parts.append(message.get("body", b""))
            seen += len(parts[-1])
            if seen > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(parts), "more_body": False}

        await self.app(scope, replay, send)


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadInput("the request body is not valid JSON", slug="malformed-json")
    details = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                "type": str(e.get("type", ""))} for e in errors]
    if any(e.get("loc", ("",))[0] in ("path", "query", "header") for e in errors):
        return BadInput("invalid request parameters", slug="bad-parameters", errors=details)
    return Unprocessable("the request body does not match the schema", slug="invalid-body",
                         errors=details)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json: refusals, validation, HTTP errors, crashes."""
    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_problem(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slugs = {404: "not-found", 405: "method-not-allowed"}
        problem = Problem(str(exc.detail), slug=slugs.get(exc.status_code, "http-error"))
        body = problem.to_dict() | {"status": exc.status_code, "title": str(exc.detail)}
        return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unreachable(request: Request, exc: Exception) -> JSONResponse:
        # One place for every route that reads or writes NATS: a cut-off bus is a
        # "retry later", never a 500 (nothing was changed that a retry would repeat
        # wrongly: a KV write is a compare-and-set).
        log.warning("NATS did not answer in time (%s): %r", request.url.path, exc)
        return problem_response(Unavailable("the message bus did not answer in time; "
                                            "retry shortly", retry_after=BUS_RETRY_S,
                                            slug="bus-unavailable"))

    async def on_crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(Problem("an internal error occurred; nothing was changed"))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for kind in UNREACHABLE:
        app.add_exception_handler(kind, on_unreachable)
    app.add_exception_handler(Exception, on_crash)


def describe_problems(app: FastAPI) -> None:
    """Make /openapi.json say what errors really are: problem+json, never FastAPI's
    default 422 body (which this app never sends)."""
    build = app.openapi
    default_422 = "#/components/schemas/HTTPValidationError"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                _bus_unavailable(responses)
                content = responses.get("422", {}).get("content", {})
                if content.get("application/json", {}).get("schema", {}).get("$ref") \
                        != default_422:
                    continue
                # Bodies that do not match are 422; bad path or query parameters are 400
                # (see _validation_problem).
                del responses["422"]
                status = "422" if "requestBody" in operation else "400"
                responses.setdefault(status, {
                    "description": "the body does not match the schema" if status == "422"
                    else "invalid parameters",
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {
                        "$ref": "#/components/schemas/Problem"}}}})
        if not _mentions(schema.get("paths"), default_422):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bus_unavailable(responses: dict[str, Any]) -> None:
    """Every route that refuses anything may also say 503 bus-unavailable (the handler in
    install_problem_handlers): describe it beside the route's own reasons for a 503."""
    if not any(str(s).startswith(("4", "5")) for s in responses):
        return
    if "503" in responses:
        ours = dict(responses["503"])  # (never mutate a dict other routes may share)
        ours["description"] = f"{ours.get('description', '')}; or {BUS_WHY}"
        responses["503"] = ours
        return
    responses["503"] = {
        "description": BUS_WHY,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "headers": {"Retry-After": {"description": "seconds to wait",
                                    "schema": {"type": "integer"}}}}


def _mentions(tree: Any, ref: str) -> bool:
    if isinstance(tree, dict):
        return any(_mentions(v, ref) for v in tree.values())
    if isinstance(tree, list):
        return any(_mentions(v, ref) for v in tree)
    return bool(tree == ref)


def watch_stage(app: FastAPI, ctx: Context, started: float) -> None:
    """When this process runs the stage role next to the api (`townhall serve`), /healthz
    says whether a stage is reporting: the stage runs as a child process, serves no HTTP,
    and could otherwise die unnoticed."""
    board = getattr(app.state, "stage_board", None)
    if "stage" not in ctx.settings.roles or board is None:
        return

    heard = False

    def stage_up() -> bool:
        nonlocal heard
        now = time.monotonic()
        if any(age <= STAGE_QUIET_S for _, age in board.current(now)):
            heard = True
            return True
        return not heard and now - started < STAGE_STARTUP_S

    ctx.health.setdefault("stage", stage_up)


def build_app(ctx: Context) -> FastAPI:
    """One ASGI app with every HTTP role this process runs."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in ctx.on_start:
            await hook()
        try:
            yield
        finally:
            for hook in reversed(ctx.on_stop):
                try:
                    await hook()
                except Exception:
                    log.exception("stop hook failed")

    app = FastAPI(title="townhall", version=__version__, openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Live audio rooms: the Spaces control API, WHIP ingest and "
                              "listener streams. Errors are application/problem+json.")
    app.state.ctx = ctx
    install_problem_handlers(app)
    app.add_route("/metrics", metrics, include_in_schema=False)
    app.add_route("/healthz", healthz_endpoint(ctx), include_in_schema=False)
    for role in ctx.settings.roles:
        for module_name in HTTP_PLUGINS.get(role, []):
            module: Any = importlib.import_module(module_name)
            module.install(app, ctx)
    describe_problems(app)
    watch_stage(app, ctx, time.monotonic())
    app.add_middleware(BodyLimit)
    # Outermost but metrics: every answer, refusals included, carries the headers.
    app.add_middleware(SecurityHeaders, settings=ctx.settings)
    app.add_middleware(MetricsMiddleware)
    return app
