"""Response shapes of the Spaces API, for /openapi.json (handlers still return plain dicts).

They describe the snapshot contract of townhall.room.snapshot; extra keys are allowed
because the contract may grow. Errors are described once, as problem+json.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from townhall.problems import PROBLEM_CONTENT_TYPE, Problem


class Open(BaseModel):
    """A response object that may carry more keys than listed (extend, never change)."""

    model_config = ConfigDict(extra="allow")


class Person(Open):
    id: str
    name: str


class OnStage(Person):
    role: Literal["host", "cohost", "speaker"]
    muted: bool
    muted_by: str | None = Field(description='null, "self", or who muted them')


class Waiting(Person):
    at: float = Field(description="unix seconds")


class Recording(Open):
    """A finished recording (townhall.recording)."""

    state: str = Field(description='"ready" (webhooks: recording.ready); "expired" once '
                       "the sweep deleted its files after --recording-days")
    url: str = Field(description="the replay file, /replay/<id>.opus")
    duration: float = Field(description="seconds of audio")
    bytes: int
    m4a: str = Field(description="the same audio as Opus in MP4, /replay/<id>.m4a")
    m4a_bytes: int
    ready_at: float
    expires_at: float = Field(description="after this (unix seconds) it answers 410")


class Snapshot(Open):
    """A Space as everyone may see it (see townhall.room.snapshot)."""

    id: str = Field(pattern="^[a-z0-9]{10}$")
    title: str
    description: str
    state: Literal["scheduled", "live", "ended"]
    version: int = Field(ge=1, description="+1 on every visible change")
    private: bool
    signed_in_only: bool = Field(default=False,
                                 description="no anonymous or guest listeners")
    host: Person
    scheduled_start: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    stage: list[OnStage]
    requests: list[Waiting]
    invites: list[Waiting]
    listeners: int = Field(ge=0, description="summed from the edges' reports")
    reactions: dict[str, int] = Field(description="running totals per emoji")
    recording: bool | Recording = Field(
        default=False, description="true while recorded (or until the recording is ready "
        "after the end); the finished recording's details once it is ready; false if none")


class SpaceList(Open):
    spaces: list[Snapshot]
    next: str | None = Field(description="pass as ?cursor= for the following page; "
                                         "null on the last page")


class Session(Open):
    token: str
    identity: str
    name: str


class Me(Open):
    identity: str
    name: str
    space: str | None = Field(description="the one Space this token acts on, or null")
    role: Literal["host", "speaker", "listener"]
    expires: int = Field(description="unix seconds")
    guest: bool = Field(default=False, description="a guest session's token (open mode)")


class Accepted(Open):
    accepted: bool


class Edge(Open):
    node: str
    url: str | None = Field(description="the edge's public base URL; null = same origin")
    listeners: int
    capacity: int | None
    ws: str
    ogg: str


class Listen(Open):
    ws: str
    ogg: str
    edges: list[Edge] = Field(description="least loaded first")


WHY = {
    400: "malformed JSON, bad parameters or an unknown action",
    401: "no, an expired or an invalid access token",
    403: "the token or the person may not do this",
    404: "no such Space (or a private one you may not see)",
    405: "this resource does not take this method; Allow lists those it does",
    409: "not possible in the Space's current state",
    410: "it was kept for a while and is gone now",
    413: "request body over the cap",
    422: "the body does not match the schema",
    429: "too many requests from you; see Retry-After",
    503: "too much contention on this Space; see Retry-After",
}


def problems(*statuses: int, why: dict[int, str] | None = None
             ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all problem+json (``why``
    replaces the generic description of a status for one route)."""
    ref = {"$ref": f"#/components/schemas/{Problem.__name__}"}
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": (why or {}).get(status, WHY[status]),
                                 "content": {PROBLEM_CONTENT_TYPE: {"schema": ref}}}
        if status in (429, 503):
            entry["headers"] = {"Retry-After": {"description": "seconds to wait",
                                                "schema": {"type": "integer"}}}
        out[status] = entry
    return out
