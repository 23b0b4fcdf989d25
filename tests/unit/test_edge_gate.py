"""Who may listen, the `from` parameter, and the shape of edge reports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.snapshots import space
from townhall.auth import TokenIssuer
from townhall.edge.gate import may_listen, parse_from
from townhall.edge.stats import edge_report, space_report
from townhall.room.snapshot import Person

ISSUER = TokenIssuer(b"k" * 32)


@pytest.mark.parametrize("raw, want", [(None, None), ("", None), ("0", 0), ("42", 42)])
def test_parse_from_accepts_sequence_numbers(raw: str | None, want: int | None) -> None:
    assert parse_from(raw) == want


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "١٢", "9" * 21, " 1"])
def test_parse_from_rejects_the_rest(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_from(raw)


def test_may_listen_codes() -> None:
    live = space(id="s", state="live", private=False)
    assert may_listen(live, "s", None, ISSUER) is None
    assert may_listen(None, "s", None, ISSUER).code == 4404  # type: ignore[union-attr]
    ended = may_listen(replace(live, state="ended"), "s", None, ISSUER)
    assert ended is not None and (ended.code, ended.status) == (4410, 410)
    # A private Space is no Space to whoever may not see it (existence does not leak).
    private = replace(live, private=True, host=Person("ada", "Ada"))
    assert may_listen(private, "s", None, ISSUER).code == 4404  # type: ignore[union-attr]
    assert may_listen(private, "s", "junk", ISSUER).code == 4404  # type: ignore[union-attr]
    other = ISSUER.mint("bob", "Bob", space="t", role="listener")
    assert may_listen(private, "s", other, ISSUER).code == 4404  # type: ignore[union-attr]
    guest = ISSUER.mint("g-1", "G", guest=True)
    assert may_listen(private, "s", guest, ISSUER).code == 4404  # type: ignore[union-attr]
    mine = ISSUER.mint("bob", "Bob", space="s", role="listener")
    assert may_listen(private, "s", mine, ISSUER) is None
    host = ISSUER.mint("ada", "Ada")
    assert may_listen(private, "s", host, ISSUER) is None
    # Signed-in only: a token is needed (4401), and not a guest's (4403).
    members = replace(live, signed_in_only=True, host=Person("ada", "Ada"))
    assert may_listen(members, "s", None, ISSUER).code == 4401  # type: ignore[union-attr]
    assert may_listen(members, "s", guest, ISSUER).code == 4403  # type: ignore[union-attr]
    assert may_listen(members, "s", ISSUER.mint("cy", "Cy", role="listener"), ISSUER) is None


def test_report_shapes() -> None:
    assert space_report("n1", 3, {"👏": 2}, None, 100, 5.0) == {
        "node": "n1", "listeners": 3, "reactions": {"👏": 2}, "url": None,
        "capacity": 100, "at": 5.0}
    assert edge_report("n1", "https://e1", 100, 7, 5.0) == {
        "node": "n1", "url": "https://e1", "capacity": 100, "listeners": 7, "at": 5.0}
