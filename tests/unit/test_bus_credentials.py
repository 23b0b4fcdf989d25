"""Credentials for NATS (bus/credentials.py): files only, private, created once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from townhall.bus.credentials import (
    USERS_FILE,
    NatsAuth,
    load_auth_file,
    load_or_create_users,
    parse_auth,
    write_private,
)
from townhall.bus.permissions import user_names
from townhall.cli.main import build_parser, serve_settings
from townhall.serve import _child_argv, nats_auth
from townhall.settings import Settings


def test_users_are_created_once_private_and_reused(tmp_path: Path) -> None:
    users = load_or_create_users(tmp_path)
    path = tmp_path / USERS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(users) == set(user_names())
    assert len(set(users.values())) == len(users) and all(len(p) >= 32 for p in users.values())
    assert load_or_create_users(tmp_path) == users
    assert not [p for p in tmp_path.iterdir() if p.name != USERS_FILE]  # no temp file left


def test_users_a_newer_version_knows_are_added(tmp_path: Path) -> None:
    path = tmp_path / USERS_FILE
    path.write_text(json.dumps({"users": {"admin": "kept"}}))
    path.chmod(0o600)
    users = load_or_create_users(tmp_path)
    assert users["admin"] == "kept" and set(users) == set(user_names())
    assert json.loads(path.read_text())["users"] == users
    assert path.stat().st_mode & 0o777 == 0o600


def test_write_private_replaces_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


def test_auth_file_forms() -> None:
    assert parse_auth('{"user": "u", "password": "p"}') == NatsAuth(user="u", password="p")
    assert parse_auth('{"token": "t"}').options() == {"token": "t"}
    both = parse_auth('{"users": {"api+edge": "x", "stage": "y"}}', ["edge", "api"])
    assert both.options() == {"user": "api+edge", "password": "x"}
    for bad in ("[]", "nope", '{"user": "u"}', '{"token": ""}'):
        with pytest.raises(ValueError):
            parse_auth(bad)
    with pytest.raises(ValueError, match="stage"):
        parse_auth('{"users": {"api": "x"}}', ["stage"])


def test_secrets_stay_out_of_reprs_and_creds_go_to_nats_py(tmp_path: Path) -> None:
    auth = NatsAuth(user="api", password="hunter2-secret")
    assert "hunter2" not in repr(auth)
    assert "s3cret" not in repr(NatsAuth(token="s3cret"))
    creds = tmp_path / "u.creds"
    assert NatsAuth(creds=creds, user="ignored").options() == {"user_credentials": str(creds)}
    assert NatsAuth().options() == {}


def test_a_loose_auth_file_is_warned_about(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "auth.json"
    path.write_text('{"token": "t"}')
    path.chmod(0o644)
    assert load_auth_file(path).token == "t"
    assert "chmod 600" in caplog.text


def test_flags_and_environment_name_files(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "user.creds"
    monkeypatch.setenv("TOWNHALL_NATS_CREDS", str(creds))
    settings = serve_settings(build_parser().parse_args(["serve", "--nats", "nats://h:1"]))
    assert settings.nats_creds == creds
    assert nats_auth(settings, ["api"]) == NatsAuth(creds=creds)
    settings = serve_settings(build_parser().parse_args(
        ["serve", "--nats", "nats://h:1", "--nats-auth-file", str(tmp_path / "a.json")]))
    assert settings.nats_creds is None and settings.nats_auth_file == tmp_path / "a.json"


def test_the_stage_child_gets_paths_not_secrets(tmp_path: Path) -> None:
    users = load_or_create_users(tmp_path)
    settings = Settings(data_dir=tmp_path, nats_urls=["nats://127.0.0.1:4222"],
                        nats_auth_file=tmp_path / USERS_FILE,
                        nats_creds=tmp_path / "x.creds")
    argv = _child_argv(settings, ["stage"])
    assert argv[argv.index("--nats-auth-file") + 1] == str(tmp_path / USERS_FILE)
    assert argv[argv.index("--nats-creds") + 1] == str(tmp_path / "x.creds")
    assert not any(p in " ".join(argv) for p in users.values())
    child = serve_settings(build_parser().parse_args(argv[3:]))
    child.nats_creds = None
    assert nats_auth(child, ["stage"]) == NatsAuth(user="stage", password=users["stage"])


def test_the_stage_child_is_named_after_its_parent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, nats_urls=["nats://10.9.0.2:4222"], node_id="h2")
    argv = _child_argv(settings, ["stage"])
    child = serve_settings(build_parser().parse_args(argv[3:]))
    assert child.node_id == "h2-stage"


def test_the_stage_child_waits_for_nats_as_long_as_its_parent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, nats_urls=["nats://10.9.0.2:4222"], nats_timeout=2.5)
    child = serve_settings(build_parser().parse_args(_child_argv(settings, ["stage"])[3:]))
    assert child.nats_timeout == 2.5
    with pytest.raises(ValueError, match="nats-timeout"):
        serve_settings(build_parser().parse_args(["serve", "--nats-timeout", "0"]))
