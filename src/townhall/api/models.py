"""Request bodies of the Spaces API: unknown fields are refused, sizes are bounded."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from townhall.room.rules import ACTIONS
from townhall.room.snapshot import REACTIONS


class Strict(BaseModel):
    """A request body that refuses fields it does not know."""
    model_config = ConfigDict(extra="forbid")


class SessionIn(Strict):
    """POST /api/v1/sessions: a guest's display name."""
    name: str = Field(min_length=1, max_length=64, description="display name")


class SpaceIn(Strict):
    """POST /api/v1/spaces: a new Space."""
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=1000)
    scheduled_start: datetime | None = Field(default=None, description="ISO 8601; omit for now")
    private: bool = False
    signed_in_only: bool = Field(default=False,
                                 description="no anonymous or guest listeners")
    record: bool = Field(default=False, description="keep a recording of the Space "
                                                    "(replay, clips, HLS after the end)")


class ActionIn(Strict):
    """POST /api/v1/spaces/{id}/actions: one stage or moderation action."""
    action: str = Field(description=f"one of {', '.join(ACTIONS)}", pattern="^[a-z_]{1,20}$")
    identity: str | None = Field(default=None, max_length=64,
                                 description="whom the action is about (default: yourself)")
    name: str | None = Field(default=None, max_length=64, description="display name (invite)")
    block: bool = Field(default=False, description="with remove: keep them out for good")


class ReactionIn(Strict):
    """POST /api/v1/spaces/{id}/reactions: one reaction."""
    # The enum documents the one list (townhall.room.snapshot); the route refuses others
    # itself, with its own problem type (unknown-reaction).
    emoji: str = Field(min_length=1, max_length=8,
                       json_schema_extra={"enum": list(REACTIONS)})
