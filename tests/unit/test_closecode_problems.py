"""One close-code enum and one status→problem map, and the clients agree with them."""

from __future__ import annotations

import re
from pathlib import Path

from townhall.closecode import CloseCode
from townhall.problems import BY_STATUS

PLAYER = Path(__file__).parents[2] / "src/townhall/web/static/player.js"


def test_each_status_maps_to_the_problem_of_that_status() -> None:
    assert BY_STATUS and all(problem.status == status for status, problem in BY_STATUS.items())


def test_close_codes_mirror_an_http_status_and_are_distinct() -> None:
    assert len({int(c) for c in CloseCode}) == len(CloseCode)
    assert all(4000 <= c < 5000 for c in CloseCode)
    # 44xx/45xx: 4000 + the HTTP status a plain request would have been answered with
    assert {c - 4000 for c in CloseCode} <= {*BY_STATUS, 408, 429, 503}


def test_the_web_player_reads_only_codes_the_edge_sends() -> None:
    used = {int(code) for code in re.findall(r"ev\.code === (\d{4})", PLAYER.read_text())}
    assert used and used <= {int(c) for c in CloseCode}
