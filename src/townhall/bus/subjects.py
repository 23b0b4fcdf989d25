"""Names of subjects, streams and key-value buckets: the wire contract between roles."""

from __future__ import annotations

SPACES_BUCKET = "spaces"          # key: <space id>, value: the Space snapshot (JSON)
LEASES_BUCKET = "stage_leases"    # key: <space id>, value: owning stage node id; short TTL
LEASE_TTL_S = 3.0
MEDIA_STREAM = "MEDIA"            # subjects townhall.*.media, ~60 s kept
MEDIA_MAX_AGE_S = 60.0
STATS_STREAM = "STATS"            # subjects townhall.*.stats.*, work queue for the api
STATS_CONSUMER = "api-stats"
WEBHOOKS_STREAM = "WEBHOOKS"      # subjects townhall-hooks.*, events for webhook endpoints
WEBHOOKS_MAX_AGE_S = 7 * 24 * 3600.0  # longer than any endpoint's retries may last
WEBHOOKS_DEDUP_S = 600.0          # the same event derived by several apis is stored once
AAC_STREAM = "HLSAAC"             # subjects townhall.*.aac, the AAC rendition, ~60 s kept
AAC_MAX_AGE_S = 60.0
RECORDINGS_BUCKET = "recordings"  # object store: <space>/index, <space>/seg/<n>, ...
RECORDERS_BUCKET = "recorders"    # key: <space id>, value: recording node id; short TTL
RECORDER_TTL_S = 10.0            # also holds ``aac.<space id>``: who encodes its AAC,
                                  # and "sweep" / "leaders": the api sweeping recordings /
                                  # keeping NATS stream leaders in place (api/leaders.py)


def packager_key(space: str) -> str:
    """The key in RECORDERS_BUCKET of whoever encodes a Space's AAC rendition."""
    return f"aac.{space}"


def recorder_durable(space: str) -> str:
    """The durable MEDIA consumer that records one Space (survives recorder restarts)."""
    return f"rec-{space}"


def kv_key(bucket: str, key: str) -> str:
    """Where NATS publishes each put/delete of one key-value entry (watch it with a plain
    subscription)."""
    return f"$KV.{bucket}.{key}"


def media(space: str) -> str:
    """Sequence-numbered program chunks of one Space (see townhall.media.chunk)."""
    return f"townhall.{space}.media"


def aac(space: str) -> str:
    """The AAC rendition of a Space's program (townhall.media.aac), encoded once by the api
    holding its packager key; every api serving HLS follows it."""
    return f"townhall.{space}.aac"


def aac_wanted(space: str) -> str:
    """"Someone asked this node for a live Space's AAC": every api says so at most every
    10 s while asked; the packager stops encoding after a minute without (not stored)."""
    return f"townhall.{space}.aacwant"


def state(space: str) -> str:
    """Full room snapshots (JSON), published by the api after each change."""
    return f"townhall.{space}.state"


def levels(space: str) -> str:
    """Who is speaking: per-speaker levels from the stage, at most 4 per second."""
    return f"townhall.{space}.levels"


def stats(space: str, node: str) -> str:
    """One edge's (or api's) per-second listener count and reaction sums for a Space."""
    return f"townhall.{space}.stats.{node}"


def control(space: str) -> str:
    """Commands to the stage owning a Space (WHIP offers, leaves, roster kicks)."""
    return f"townhall.{space}.control"


def whip(space: str) -> str:
    """WHIP offers and leaves for one Space, api -> stages (request/reply). Every stage
    subscribes to all of them; only the one holding the Space's lease answers."""
    return f"townhall.stage.whip.{space}"


def hooks(space: str) -> str:
    """Webhook events of one Space (see townhall.hooks.events), one consumer per endpoint.
    Not under ``townhall.``: a stream's subjects must not overlap MEDIA's ``townhall.*.media``
    (a Space named "media"...), and only the api needs to reach these."""
    return f"townhall-hooks.{space}"


EDGES = "townhall.edges.*"


def edge_announce(node: str) -> str:
    """An edge's once-a-second heartbeat: node, url, capacity, total listeners."""
    return f"townhall.edges.{node}"


STAGES = "townhall.stages.*"


def stage_report(node: str) -> str:
    """A stage's once-a-second heartbeat: the Spaces it owns, clock and loss counters."""
    return f"townhall.stages.{node}"
