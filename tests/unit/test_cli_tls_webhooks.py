"""`townhall serve` flags for TLS to NATS and webhooks: checked up front, handed on as
paths to the stage child, and never applied to the embedded server."""

from pathlib import Path

import pytest

from townhall.cli.main import build_parser, serve_settings
from townhall.serve import _child_argv, nats_tls
from townhall.settings import Settings


def settings_of(*argv: str) -> Settings:
    return serve_settings(build_parser().parse_args(["serve", *argv]))


def test_tls_paths_reach_the_bus_and_the_stage_child(tmp_path: Path) -> None:
    s = settings_of("--nats", "tls://n1:4222", "--nats-tls-ca", "/etc/townhall/ca.pem",
                    "--nats-tls-cert", "/etc/townhall/api.pem",
                    "--nats-tls-key", "/etc/townhall/api-key.pem")
    tls = nats_tls(s)
    assert tls is not None and tls.ca == Path("/etc/townhall/ca.pem")
    argv = _child_argv(s, ["stage"])
    assert argv[argv.index("--nats-tls-ca") + 1] == "/etc/townhall/ca.pem"
    assert argv[argv.index("--nats-tls-key") + 1] == "/etc/townhall/api-key.pem"


def test_no_ca_no_tls() -> None:
    assert nats_tls(settings_of("--nats", "nats://n1:4222")) is None


@pytest.mark.parametrize("argv", [
    ["--nats-tls-ca", "ca.pem", "--nats-tls-cert", "c.pem"],       # no key
    ["--nats-tls-cert", "c.pem", "--nats-tls-key", "k.pem"],       # no CA
])
def test_incomplete_tls_is_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="nats-tls"):
        settings_of(*argv)


def test_a_missing_webhooks_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="webhooks"):
        settings_of("--webhooks", str(tmp_path / "nope.json"))
    hooks = tmp_path / "hooks.json"
    hooks.write_text("{}")
    assert settings_of("--webhooks", str(hooks)).webhooks == hooks
    # A stage-only process does not read it.
    assert settings_of("--roles", "stage", "--webhooks", str(tmp_path / "x")).webhooks
