"""Response shapes of the Spaces API, for /openapi.json (handlers still return plain dicts).

The snapshot's schema (``Snapshot`` and the shapes inside it) is generated from the
dataclasses of townhall.room.snapshot, so the contract is written once; extra keys are
allowed because the contract may grow. Errors are described once, as problem+json.
"""

from __future__ import annotations

import functools
import operator
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from townhall.problems import PROBLEM_CONTENT_TYPE, Problem
from townhall.room import snapshot
from townhall.room.jsonshape import json_fields


class Open(BaseModel):
    """A response object that may carry more keys than listed (extend, never change)."""

    model_config = ConfigDict(extra="allow")


# The snapshot's dataclasses, by the names their schemas have always had in /openapi.json.
_NAMES: dict[type, tuple[str, str]] = {
    snapshot.Person: ("Person", "Someone named in a snapshot: the host."),
    snapshot.Speaker: ("OnStage", "Someone on stage."),
    snapshot.Waiting: ("Waiting", "A request to speak, or an invitation to, and when."),
    snapshot.Recording: ("Recording", "A finished recording (townhall.recording)."),
    snapshot.Space: ("Snapshot", "A Space as everyone may see it "
                                 "(see townhall.room.snapshot)."),
}


@functools.cache
def public_model(cls: type) -> type[BaseModel]:
    """The schema of a snapshot dataclass's public JSON: its internal fields (``_`` keys)
    and ``extra`` left out; a field always written is required, one left out when empty
    or null is not."""
    name, doc = _NAMES[cls]
    defs: dict[str, Any] = {}
    for f, hint in json_fields(cls):
        meta = f.metadata
        if meta.get("internal"):
            continue
        options = dict(meta.get("schema", {}))
        if meta.get("doc"):
            options["description"] = meta["doc"]
        if meta.get("omit"):  # left out rather than null: not required, never null
            hint = functools.reduce(operator.or_, [a for a in get_args(hint)
                                                   if a is not type(None)])
            defs[f.name] = (_swap(hint), Field(None, **options))
        else:
            defs[f.name] = (_swap(hint), Field(..., **options))
    model: type[BaseModel] = create_model(name, __base__=Open, __doc__=doc, **defs)
    return model


def _swap(hint: Any) -> Any:
    """``hint`` with each snapshot dataclass in it replaced by its model."""
    if hint in _NAMES:
        return public_model(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, [_swap(a) for a in args])
    if origin in (list, dict):
        return types.GenericAlias(origin, tuple(_swap(a) for a in args))
    return hint


Snapshot = public_model(snapshot.Space)


_PAGE: dict[str, Any] = {
    "spaces": (types.GenericAlias(list, (Snapshot,)), ...),
    "next": (str | None, Field(description="pass as ?cursor= for the following page; "
                                           "null on the last page"))}
SpaceList = create_model("SpaceList", __base__=Open, __doc__="A page of Spaces.", **_PAGE)


class Session(Open):
    """A session: its access token and the identity it names."""

    token: str
    identity: str
    name: str


class Me(Open):
    """What the caller's access token grants."""

    identity: str
    name: str
    space: str | None = Field(description="the one Space this token acts on, or null")
    role: Literal["host", "speaker", "listener"]
    expires: int = Field(description="unix seconds")
    guest: bool = Field(default=False, description="a guest session's token (open mode)")


class Accepted(Open):
    """The request was taken (answers 202)."""

    accepted: bool


class Edge(Open):
    """An edge a listener may connect to, with its load."""

    node: str
    url: str | None = Field(description="the edge's public base URL; null = same origin")
    listeners: int
    capacity: int | None
    ws: str
    ogg: str


class Listen(Open):
    """Where to listen: the chosen edge's URLs and every edge."""

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
