"""The operator's webhooks file (``--webhooks PATH`` / ``TOWNHALL_WEBHOOKS``), JSON::

    {"endpoints": [{"name": "site", "url": "https://example.org/hooks",
                    "secret": "whsec_...", "events": ["space.started", "space.ended"],
                    "timeout_s": 10}],
     "retry": {"first_s": 5, "max_s": 3600, "give_up_after_s": 86400, "max_attempts": 50}}

``events`` is optional (default: every type); ``name`` names the endpoint's durable
consumer, so keep it when changing the URL. Parsing only: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from townhall.hooks.backoff import RetrySchedule
from townhall.hooks.events import EVENT_TYPES
from townhall.hooks.signing import Signer

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class Endpoint:
    """One receiver: where, signed with what, which event types, how long to wait."""

    name: str
    url: str
    signer: Signer = field(repr=False)
    events: frozenset[str] = frozenset(EVENT_TYPES)
    timeout_s: float = 10.0

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribed to ``event_type``."""
        return event_type in self.events


@dataclass(frozen=True)
class WebhookConfig:
    """Every endpoint and the retry schedule they share."""

    endpoints: tuple[Endpoint, ...]
    retry: RetrySchedule = field(default_factory=RetrySchedule)


def parse_config(text: str) -> WebhookConfig:
    """The webhooks file's JSON; ValueError saying what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("endpoints"), list):
        raise ValueError('expected {"endpoints": [...]}')
    endpoints = tuple(_endpoint(i, e) for i, e in enumerate(raw["endpoints"]))
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ValueError("endpoint names must differ")
    return WebhookConfig(endpoints=endpoints, retry=_retry(raw.get("retry", {})))


def _endpoint(i: int, raw: Any) -> Endpoint:
    if not isinstance(raw, dict):
        raise ValueError(f"endpoint {i}: expected an object")
    url = raw.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).hostname:
        raise ValueError(f"endpoint {i}: url must be http(s)://host/...")
    name = raw.get("name", f"endpoint{i}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"endpoint {i}: name must be 1-32 of A-Z a-z 0-9 _ -")
    secrets = raw.get("secret")
    secrets = [secrets] if isinstance(secrets, str) else secrets
    if not isinstance(secrets, list) or not secrets or \
            not all(isinstance(s, str) for s in secrets):
        raise ValueError(f"endpoint {name}: secret must be whsec_... (or a list, rotating)")
    try:
        signer = Signer.from_secrets(*secrets)
    except ValueError as exc:
        raise ValueError(f"endpoint {name}: {exc}") from exc
    events = raw.get("events", list(EVENT_TYPES))
    if not isinstance(events, list) or not events or \
            not set(events) <= set(EVENT_TYPES):
        raise ValueError(f"endpoint {name}: events must be a non-empty list of "
                         f"{', '.join(EVENT_TYPES)}")
    timeout = raw.get("timeout_s", 10.0)
    if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise ValueError(f"endpoint {name}: timeout_s must be in (0, 60]")
    return Endpoint(name=name, url=url, signer=signer, events=frozenset(events),
                    timeout_s=float(timeout))


def _retry(raw: Any) -> RetrySchedule:
    if not isinstance(raw, dict):
        raise ValueError("retry: expected an object")
    default = RetrySchedule()
    values: dict[str, float] = {}
    for key in ("first_s", "max_s", "give_up_after_s", "max_attempts"):
        value = raw.get(key, getattr(default, key))
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"retry.{key} must be a positive number")
        values[key] = value
    if values["give_up_after_s"] > 7 * 24 * 3600:
        raise ValueError("retry.give_up_after_s is at most 7 days (the stream keeps no more)")
    return RetrySchedule(first_s=float(values["first_s"]), max_s=float(values["max_s"]),
                         give_up_after_s=float(values["give_up_after_s"]),
                         max_attempts=int(values["max_attempts"]))
