"""The webhooks file: what it accepts and what it refuses, saying why."""

import base64
import json

import pytest

from townhall.hooks.endpoints import parse_config
from townhall.hooks.events import EVENT_TYPES

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def test_a_minimal_file() -> None:
    cfg = parse_config(json.dumps({"endpoints": [{"url": "https://x.example/h",
                                                  "secret": SECRET}]}))
    (ep,) = cfg.endpoints
    assert ep.name == "endpoint0"
    assert ep.events == frozenset(EVENT_TYPES)
    assert ep.wants("space.started")
    assert cfg.retry.give_up_after_s == 24 * 3600


def test_filters_timeouts_and_retry() -> None:
    cfg = parse_config(json.dumps({
        "endpoints": [{"name": "site", "url": "http://127.0.0.1:9/h", "secret": [SECRET],
                       "events": ["space.ended"], "timeout_s": 2}],
        "retry": {"first_s": 0.5, "max_s": 4, "give_up_after_s": 60, "max_attempts": 7}}))
    ep = cfg.endpoints[0]
    assert ep.wants("space.ended") and not ep.wants("space.started")
    assert ep.timeout_s == 2.0
    assert (cfg.retry.first_s, cfg.retry.max_attempts) == (0.5, 7)


@pytest.mark.parametrize(("doc", "says"), [
    ({}, "endpoints"),
    ({"endpoints": [{"url": "ftp://x/h", "secret": SECRET}]}, "url"),
    ({"endpoints": [{"url": "https://x/h", "secret": "nope"}]}, "whsec_"),
    ({"endpoints": [{"url": "https://x/h", "secret": SECRET, "events": ["space.exploded"]}]},
     "events"),
    ({"endpoints": [{"url": "https://x/h", "secret": SECRET, "name": "a b"}]}, "name"),
    ({"endpoints": [{"url": "https://x/h", "secret": SECRET, "name": "a"},
                    {"url": "https://y/h", "secret": SECRET, "name": "a"}]}, "differ"),
    ({"endpoints": [{"url": "https://x/h", "secret": SECRET, "timeout_s": 0}]}, "timeout"),
    ({"endpoints": [], "retry": {"first_s": -1}}, "first_s"),
    ({"endpoints": [], "retry": {"give_up_after_s": 30 * 24 * 3600}}, "7 days"),
])
def test_refusals_say_what_is_wrong(doc: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_config(json.dumps(doc))
