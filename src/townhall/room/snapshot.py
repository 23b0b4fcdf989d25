"""The Space snapshot: the contract every role and client reads.

The api stores one JSON document per Space in the ``spaces`` key-value bucket. Its
public part is what ``GET /api/v1/spaces/<id>``, ``townhall.<id>.state`` and ``/ws`` carry::

    {
      "id": "k3v9x2m4qa",                 # [a-z0-9]{10}; also a NATS subject token
      "title": "...", "description": "...",
      "state": "scheduled" | "live" | "ended",
      "version": 7,                       # +1 on every change, never reused
      "private": false,                   # only its people and tokens for it see it
      "signed_in_only": false,            # no anonymous or guest listeners
      "host": {"id": "ada", "name": "Ada"},
      "scheduled_start": "2026-11-25T20:00:00Z" | null,
      "created_at": ..., "started_at": ... | null, "ended_at": ... | null,   # unix seconds
      "stage": [{"id": "ada", "name": "Ada", "role": "host" | "cohost" | "speaker",
                 "muted": false, "muted_by": null | "self" | "<identity>"}],
      "requests": [{"id": "bob", "name": "Bob", "at": 1795576043.1}],
      "invites": [{"id": "cy", "name": "Cy", "at": ...}],
      "listeners": 0,                     # summed from the edges' reports, never a list
      "reactions": {"👏": 12, ...},        # running totals, summed per interval
      "recording": false | true | {"state": "ready", "url": "/replay/<id>.opus",
                   "duration": 3600.2,
                   "bytes": ..., "m4a": "/replay/<id>.m4a", "m4a_bytes": ...,
                   "ready_at": ..., "expires_at": ...}
    }

``recording`` is true while the Space is recorded and, after the end, until the recording
is ready; then the object with ``state: "ready"`` (the webhook ``recording.ready``), and
``state: "expired"`` (plus ``expired_at``) once the sweep deleted its files.

Keys starting with ``_`` are internal: they stay in the bucket and never leave the api
and the edges. ``public_view`` strips them. ``_blocked`` (identities), ``_blocked_nets``
and ``_nets`` (keyed hashes of guests' networks: see townhall.auth), ``_allowed``
(identities let into a private Space), ``_edges`` (edge reports), ``_record_spans``
(``[[from, to|null], ...]``: when recording was on, unix seconds).
"""

from __future__ import annotations

from typing import Any

STAGE_LIMIT = 13        # host + co-hosts + speakers
COHOST_LIMIT = 2
REQUEST_QUEUE_LIMIT = 100
INVITE_LIMIT = 50
ALLOW_LIMIT = 500
BLOCKED_NETS_LIMIT = 500
NETS_LIMIT = 200            # guests' networks remembered (requesters, speakers)
REACTIONS: tuple[str, ...] = ("👏", "❤️", "😂", "🔥", "💯", "🙌", "😮", "👍")
SNAPSHOTS_PER_SECOND = 4


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The snapshot as clients may see it: internal ``_`` keys removed."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def on_stage(doc: dict[str, Any], identity: str) -> dict[str, Any] | None:
    """The stage entry of ``identity``, if they are on stage."""
    for person in doc.get("stage", []):
        if person.get("id") == identity:
            return dict(person)
    return None
