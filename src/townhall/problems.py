"""Typed refusals shared by every role, and their RFC 9457 problem+json form.

Cores raise these; the HTTP shells map each to one status and one stable ``type``.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

# JSON Schema of every problem+json body townhall sends (RFC 9457 members plus extras).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "stable: /problems/<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "retry_after": {"type": "integer", "description": "with 429 and 503, in seconds"},
        "limit": {"type": "integer", "description": "with 413, the cap in bytes"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "with 400 and 422, what did not match"},
    },
    "additionalProperties": True,
}


class Problem(Exception):
    """A refusal with an HTTP status and a stable problem type."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.instance_slug = slug or self.slug
        self.extra = extra

    @property
    def type(self) -> str:
        """``/problems/<slug>``: stable, one per kind of refusal."""
        return PROBLEM_BASE + self.instance_slug

    def to_dict(self) -> dict[str, Any]:
        """The problem+json body."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the body (none by default)."""
        return {}


class BadInput(Problem):
    """400: the request is malformed or out of bounds."""

    status = 400
    slug = "bad-input"
    title = "Bad input"


class Unauthorized(Problem):
    """401: no access token, or one that does not verify."""

    status = 401
    slug = "unauthorized"
    title = "Missing or invalid access token"

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate``, as RFC 6750 asks of a 401."""
        return {"WWW-Authenticate": 'Bearer realm="townhall"'}


class Forbidden(Problem):
    """403: the token is good but does not grant this."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(Problem):
    """404: no such Space, session or resource (or one the caller may not know of)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class NotAllowed(Problem):
    """405: the resource exists but does not take this method (``Allow`` says which do)."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"

    def __init__(self, detail: str, *, allow: str, slug: str | None = None) -> None:
        super().__init__(detail, slug=slug)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        """``Allow``: the methods the resource does take."""
        return {"Allow": self.allow}


class Conflict(Problem):
    """409: the request contradicts the current state (e.g. an action on an ended Space)."""

    status = 409
    slug = "conflict"
    title = "Conflict with the current state"


class Gone(Problem):
    """410: it existed and is gone for good (an expired recording)."""

    status = 410
    slug = "gone"
    title = "No longer available"


class TooLarge(Problem):
    """413: the body is over the cap."""

    status = 413
    slug = "too-large"
    title = "Request body too large"


class Unprocessable(Problem):
    """422: well-formed, but the content is refused (e.g. an SDP without audio)."""

    status = 422
    slug = "unprocessable"
    title = "Unprocessable content"


class _RetryLater(Problem):
    def __init__(self, detail: str, *, retry_after: float, slug: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail, slug=slug, retry_after=max(1, round(retry_after)), **extra)
        self.retry_after = max(1, round(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooMany(_RetryLater):
    """429: too many requests from this caller; retry after ``retry_after`` seconds."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(_RetryLater):
    """503: at capacity or the bus is unreachable; retry after ``retry_after`` seconds."""

    status = 503
    slug = "unavailable"
    title = "Service at capacity"


# The one map from a status that crossed a boundary (a stage's WHIP reply, the edge's
# listen decision) back to its typed refusal. 429 and 503 are absent: they need a
# Retry-After, which each caller reads from its own message.
BY_STATUS: dict[int, type[Problem]] = {
    400: BadInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    410: Gone, 413: TooLarge, 422: Unprocessable,
}
