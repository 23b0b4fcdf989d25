"""The suite's shared server (tests/conftest.py ``townhall_shared``) ends the live Spaces a
module leaves, so that a server that outlives modules does not mix for them forever."""

from __future__ import annotations

from tests.conftest import Served


def test_end_live_spaces_ends_every_live_space_as_its_host(townhall_shared: Served) -> None:
    token = townhall_shared.session("Leftover")
    with townhall_shared.client(token) as c:
        spaces = [c.post("/api/v1/spaces", json={"title": f"Left {i}", "private": i == 1}
                         ).json()["id"] for i in range(2)]
        for space in spaces:
            c.post(f"/api/v1/spaces/{space}/start").raise_for_status()
        assert townhall_shared.end_live_spaces() >= 2
        assert [c.get(f"/api/v1/spaces/{s}").json()["state"] for s in spaces] == ["ended"] * 2
        assert townhall_shared.end_live_spaces() == 0
