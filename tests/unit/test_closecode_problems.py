"""One close-code enum and one status→problem map, and the clients agree with them."""

from __future__ import annotations

import ast
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


def test_a_refusal_closes_with_the_code_of_its_status() -> None:
    assert CloseCode.for_status(401) is CloseCode.TOKEN_NEEDED
    assert CloseCode.for_status(404) is CloseCode.NOT_FOUND
    assert CloseCode.for_status(410) is CloseCode.ENDED
    assert CloseCode.for_status(418) is CloseCode.FORBIDDEN  # mirrored by no code


def test_clients_in_python_use_the_enum_not_numbers() -> None:
    """Close codes are written once: no 44xx/45xx number outside townhall/closecode.py."""
    src = Path(__file__).parents[2] / "src/townhall"
    found = [f"{path.relative_to(src)}:{node.lineno}"
             for path in sorted(src.rglob("*.py")) if path.name != "closecode.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and type(node.value) is int
             and 4400 <= node.value < 4600]
    assert found == []
