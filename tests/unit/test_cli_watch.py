"""`townhall watch`'s one-line view of a snapshot and its socket address."""

from __future__ import annotations

from dataclasses import replace

from townhall.cli.watch import describe, ws_address
from townhall.room import rules
from townhall.room.rules import Actor


def test_a_snapshot_in_one_line() -> None:
    ada, bob = Actor("ada", "Ada"), Actor("bob", "Bob")
    snap = rules.start(rules.create("abcdefghij", ada, title="T", now=1.0), ada, now=2.0)
    snap = rules.apply(snap, bob, "request", now=3.0)
    assert describe(snap) == ("v1 live | stage: Ada (host) | asking to speak: Bob | "
                              "listeners: 0 | reactions: none")
    snap = rules.apply(snap, ada, "approve", target="bob", now=4.0)
    snap = rules.apply(snap, ada, "mute", target="bob", now=5.0)
    snap = replace(snap, listeners=12, reactions={"🔥": 3, "👏": 1})
    assert describe(snap) == ("v1 live | stage: Ada (host), Bob (speaker, muted) | "
                              "asking to speak: nobody | listeners: 12 | reactions: 🔥 3 👏 1")


def test_the_socket_address() -> None:
    assert ws_address("http://127.0.0.1:8080/", "abc", None) == "ws://127.0.0.1:8080/ws/abc"
    assert ws_address("https://live.example.org", "abc", "t.k/n") == \
        "wss://live.example.org/ws/abc?token=t.k/n"
