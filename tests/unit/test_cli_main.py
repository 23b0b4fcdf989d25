"""`townhall serve` flags and `townhall token`, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.cli.main import build_parser, main, serve_settings


def settings_for(*argv: str) -> tuple[bool, tuple[str, ...]]:
    s = serve_settings(build_parser().parse_args(["serve", *argv]))
    return s.open_mode, s.roles


@pytest.mark.parametrize(("argv", "open_mode"), [
    ((), True),                                   # 127.0.0.1 by default
    (("--host", "localhost"), True),
    (("--host", "::1"), True),
    (("--host", "127.0.0.2"), True),
    (("--host", "0.0.0.0"), False),               # reachable from elsewhere: closed
    (("--host", "192.0.2.7"), False),
    (("--host", "live.example.org"), False),
    (("--host", "0.0.0.0", "--open"), True),
    (("--closed",), False),
])
def test_guest_sessions_are_the_default_on_loopback_only(argv: tuple[str, ...],
                                                         open_mode: bool) -> None:
    assert settings_for(*argv)[0] is open_mode


def test_open_and_closed_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--open", "--closed"])


def test_roles_are_checked() -> None:
    assert settings_for("--roles", "edge, api")[1] == ("edge", "api")
    with pytest.raises(ValueError, match="unknown role"):
        settings_for("--roles", "api,mixer")


def test_token_mints_what_the_server_accepts(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["token", "--identity", "ada", "--name", "Ada", "--space", "k3v9x2m4qa",
                 "--role", "speaker", "--ttl", "600", "--data", str(data)]) == 0
    token = capsys.readouterr().out.strip()
    assert (data / "token-secret").stat().st_mode & 0o777 == 0o600
    ident = TokenIssuer(load_or_create_secret(data)).verify(token)
    assert (ident.id, ident.name, ident.space, ident.role) == ("ada", "Ada", "k3v9x2m4qa",
                                                               "speaker")
    assert main(["token", "--identity", "no spaces", "--data", str(data)]) == 2


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_cluster_up_needs_one_of_each(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["cluster", "up", "--edges", count])
    assert exit_.value.code == 2 and ">= 1" in capsys.readouterr().err
    assert build_parser().parse_args(["cluster", "up", "--edges", "1"]).edges == 1
