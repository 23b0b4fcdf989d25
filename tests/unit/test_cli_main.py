"""`townhall serve` flags and `townhall token`, without starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.cli.main import build_parser, main, serve_settings


def settings_for(*argv: str) -> tuple[bool, tuple[str, ...]]:
    s = serve_settings(build_parser().parse_args(["serve", *argv]))
    return s.open_mode, s.roles


def test_a_subcommand_imports_only_its_own_module() -> None:
    # In a fresh interpreter: this one has imported everything already.
    code = ("import sys; from townhall.cli.main import build_parser, _command; "
            "build_parser(_command(['serve', '--port', '1'])).parse_args(['serve']); "
            "print(sorted(m for m in ('townhall.cli.speak', 'townhall.cli.storm', "
            "'townhall.cli.listen', 'aiortc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]", out


def test_each_subcommand_still_parses_alone_and_help_lists_them_all(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser("speak").parse_args(["speak", "--url", "http://x", "--space", "s",
                                             "--token", "t", "--tone", "440",
                                             "--connect-timeout", "5"])
    assert args.connect_timeout == 5.0 and args.tone == 440.0
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("serve", "token", "speak", "storm", "deploy"))


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


@pytest.mark.parametrize(("argv", "open_mode"), [
    # A reverse proxy on this machine publishes a loopback-bound server: closed.
    (("--public-url", "https://live.example.org"), False),
    (("--public-url", "http://192.0.2.7:8080"), False),
    (("--public-url", "https://live.example.org", "--open"), True),
    (("--public-url", "http://127.0.0.1:8080"), True),
    (("--public-url", "http://localhost:8080/"), True),
])
def test_a_public_url_elsewhere_closes_guest_sessions_too(argv: tuple[str, ...],
                                                          open_mode: bool) -> None:
    assert settings_for(*argv)[0] is open_mode


def test_closed_by_a_public_url_says_so_in_one_line(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    import townhall.serve

    monkeypatch.setattr(townhall.serve, "run", lambda settings: 0)
    assert main(["serve", "--data", str(tmp_path), "--public-url", "https://x.example"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["townhall: guest sessions are off when serving on https://x.example "
                   "(not loopback); --open turns them on"]


def test_proxies_retention_and_budgets_are_parsed() -> None:
    s = serve_settings(build_parser().parse_args([
        "serve", "--trusted-proxies", "10.0.0.0/8, 192.0.2.1", "--ended-retention", "12h",
        "--space-budget", "3/2m", "--space-budget-per-address", "10/5"]))
    assert s.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert s.ended_retention == 12 * 3600
    assert s.space_budget == (3.0, 1 / 120) and s.space_budget_address == (10.0, 0.2)
    default = serve_settings(build_parser().parse_args(["serve"]))
    assert default.trusted_proxies == ("127.0.0.0/8", "::1")
    assert default.ended_retention == 7 * 24 * 3600
    assert default.nats_leader_nodes == ()  # zero configuration: leaders stay put
    leaders = serve_settings(build_parser().parse_args(
        ["serve", "--nats-leader-nodes", "nats-h1, nats-h4"]))
    assert leaders.nats_leader_nodes == ("nats-h1", "nats-h4")


@pytest.mark.parametrize("argv", [
    ("--trusted-proxies", "10.0.0.0/33"), ("--trusted-proxies", "proxy.example"),
    ("--ended-retention", "soon"), ("--ended-retention", "-1"),
    ("--space-budget", "0/60"), ("--space-budget", "5"), ("--space-budget", "5/0"),
    ("--nats-leader-nodes", "h1,not a name"),
])
def test_malformed_values_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        serve_settings(build_parser().parse_args(["serve", *argv]))
