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
        return PROBLEM_BASE + self.instance_slug

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {}


class BadInput(Problem):
    status = 400
    slug = "bad-input"
    title = "Bad input"


class Unauthorized(Problem):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid access token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="townhall"'}


class Forbidden(Problem):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(Problem):
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
        return {"Allow": self.allow}


class Conflict(Problem):
    status = 409
    slug = "conflict"
    title = "Conflict with the current state"


class Gone(Problem):
    status = 410
    slug = "gone"
    title = "No longer available"


class TooLarge(Problem):
    status = 413
    slug = "too-large"
    title = "Request body too large"


class Unprocessable(Problem):
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
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(_RetryLater):
    status = 503
    slug = "unavailable"
    title = "Service at capacity"
