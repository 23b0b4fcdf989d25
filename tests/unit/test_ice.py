"""ICE settings: URL, port range and address validation, TURN REST credentials, the
RTCIceServer and WHIP Link shapes, and the public address in an answer's candidates."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from townhall.cli.main import build_parser, main, serve_settings
from townhall.ice import (
    IceConfig,
    IceSettingError,
    announce,
    link_headers,
    parse_ice_url,
    parse_link_headers,
    parse_port_range,
    parse_public_ip,
    turn_credentials,
)
from townhall.serve import _child_argv


@pytest.mark.parametrize("url", [
    "turn:turn.example.org", "turn:turn.example.org:3478", "turn:192.0.2.1:3478?transport=udp",
    "turn:turn.example.org?transport=tcp", "turns:turn.example.org:5349",
    "turns:turn.example.org:443?transport=tcp", "turn:[2001:db8::1]:3478",
])
def test_turn_urls_accepted(url: str) -> None:
    assert parse_ice_url(url, "turn_url") == url


@pytest.mark.parametrize("url", [
    "turn.example.org:3478", "http://turn.example.org", "stun:stun.example.org",
    "turn:turn.example.org:99999", "turn:turn.example.org?transport=sctp",
    "turns:turn.example.org?transport=udp", "turn:", "turn:-bad-.org", "turn:[zz::1]",
    "turn:user@turn.example.org", "turn:a..b",
])
def test_malformed_turn_urls_name_the_setting(url: str) -> None:
    with pytest.raises(IceSettingError, match="--turn-url"):
        parse_ice_url(url, "turn_url")


def test_stun_urls() -> None:
    assert parse_ice_url("stun:stun.example.org:3478", "stun_url") == \
        "stun:stun.example.org:3478"
    for bad in ("turn:stun.example.org", "stun:stun.example.org?transport=udp"):
        with pytest.raises(IceSettingError, match="--stun-url"):
            parse_ice_url(bad, "stun_url")


def test_port_range() -> None:
    assert parse_port_range("50000-50100") == (50000, 50100)
    assert parse_port_range("40000-40000") == (40000, 40000)
    for bad in ("50100-50000", "0-10", "1-70000", "50000", "a-b", "50000:50100"):
        with pytest.raises(IceSettingError, match="--rtc-ports"):
            parse_port_range(bad)


def test_public_ip() -> None:
    assert parse_public_ip("203.0.113.9") == "203.0.113.9"
    assert parse_public_ip("2001:db8::9") == "2001:db8::9"
    for bad in ("example.org", "0.0.0.0", "224.0.0.1", "203.0.113.300"):
        with pytest.raises(IceSettingError, match="--public-ip"):
            parse_public_ip(bad)


def test_turn_credentials_are_coturns_rest_scheme() -> None:
    username, credential = turn_credentials(b"s3cret", "ada", 1_700_000_000)
    assert username == "1700000000:ada"
    expected = hmac.new(b"s3cret", b"1700000000:ada", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected
    assert turn_credentials(b"other", "ada", 1_700_000_000)[1] != credential


def secret_file(tmp_path: Path, text: str = "s3cret\n") -> str:
    path = tmp_path / "turn-secret"
    path.write_text(text)
    return str(path)


def config(tmp_path: Path, **kw: object) -> IceConfig:
    raw: dict[str, object] = {"stun_urls": [], "turn_urls": [], "turn_secret_file": "",
                              "public_ip": "", "rtc_ports": "", "turn_ttl_s": 3600}
    return IceConfig.parse(**(raw | kw))  # type: ignore[arg-type]


def test_nothing_configured_means_no_servers(tmp_path: Path) -> None:
    ice = config(tmp_path)
    assert ice.servers("ada", 1000.0) == []
    assert link_headers(ice.servers("ada", 1000.0)) == []


def test_servers_in_rtciceserver_shape_expire_when_they_say(tmp_path: Path) -> None:
    ice = config(tmp_path, stun_urls=["stun:stun.example.org"],
                 turn_urls=["turn:t.example.org?transport=udp", "turns:t.example.org:5349"],
                 turn_secret_file=secret_file(tmp_path), turn_ttl_s=600)
    servers = ice.servers("ada", 1000.5)
    assert servers[0] == {"urls": ["stun:stun.example.org"]}
    assert servers[1]["urls"] == ["turn:t.example.org?transport=udp",
                                  "turns:t.example.org:5349"]
    assert servers[1]["username"] == "1600:ada"  # the secret file's newline is not secret
    assert servers[1]["credential"] == turn_credentials(b"s3cret", "ada", 1600)[1]
    assert ice.expires(1000.5) == 1600
    assert "s3cret" not in repr(ice)


def test_turn_needs_a_secret_and_a_secret_needs_turn(tmp_path: Path) -> None:
    with pytest.raises(IceSettingError, match="--turn-secret-file"):
        config(tmp_path, turn_urls=["turn:t.example.org"])
    with pytest.raises(IceSettingError, match="--turn-secret-file"):
        config(tmp_path, turn_secret_file=secret_file(tmp_path))
    with pytest.raises(IceSettingError, match=r"--turn-secret-file.*cannot read"):
        config(tmp_path, turn_urls=["turn:t.example.org"],
               turn_secret_file=str(tmp_path / "missing"))
    with pytest.raises(IceSettingError, match="empty"):
        config(tmp_path, turn_urls=["turn:t.example.org"],
               turn_secret_file=secret_file(tmp_path, " \n"))
    with pytest.raises(IceSettingError, match="--turn-ttl"):
        config(tmp_path, turn_ttl_s=5)


def test_link_headers_round_trip(tmp_path: Path) -> None:
    ice = config(tmp_path, stun_urls=["stun:stun.example.org"],
                 turn_urls=["turn:t.example.org?transport=udp"],
                 turn_secret_file=secret_file(tmp_path))
    servers = ice.servers("ada", 0)
    links = link_headers(servers)
    assert links[0] == '<stun:stun.example.org>; rel="ice-server"'
    assert links[1].startswith('<turn:t.example.org?transport=udp>; rel="ice-server"; '
                               'username="3600:ada"; credential="')
    assert links[1].endswith('"; credential-type="password"')
    assert parse_link_headers(links) == servers
    # Several links in one header value, and links of other relations, are understood.
    joined = ", ".join([*links, '<https://example.org/>; rel="help"'])
    assert parse_link_headers([joined]) == servers


ANSWER = "\r\n".join([
    "v=0", "c=IN IP4 10.0.0.5", "m=audio 50001 UDP/TLS/RTP/SAVPF 96",
    "a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host",
    "a=candidate:2 1 udp 2130706431 fd00::5 50002 typ host",
    "a=candidate:3 1 udp 1694498815 198.51.100.7 50001 typ srflx raddr 10.0.0.5 rport 50001",
    "a=candidate:4 1 udp 16777215 192.0.2.50 49152 typ relay raddr 10.0.0.5 rport 40000",
    ""])


def test_announce_rewrites_host_candidates_of_its_family_only() -> None:
    out = announce(ANSWER, "203.0.113.9")
    assert "a=candidate:1 1 udp 2130706431 203.0.113.9 50001 typ host" in out
    assert "fd00::5 50002 typ host" in out
    assert "198.51.100.7 50001 typ srflx raddr 10.0.0.5" in out
    assert "192.0.2.50 49152 typ relay" in out
    assert announce(ANSWER, "2001:db8::9").count("2001:db8::9 50002 typ host") == 1


def test_serve_flags_and_env_twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWNHALL_TURN_URL", "turn:a.example.org, turns:b.example.org")
    monkeypatch.setenv("TOWNHALL_RTC_PORTS", "50000-50010")
    monkeypatch.setenv("TOWNHALL_PUBLIC_IP", "203.0.113.9")
    monkeypatch.setenv("TOWNHALL_STUN_URL", "stun:s.example.org")
    monkeypatch.setenv("TOWNHALL_TURN_SECRET_FILE", secret_file(tmp_path))
    parsed = serve_settings(build_parser().parse_args(["serve"]))
    assert parsed.turn_urls == ["turn:a.example.org", "turns:b.example.org"]
    ice = parsed.ice()
    assert ice.rtc_ports == (50000, 50010) and ice.public_ip == "203.0.113.9"
    assert ice.stun_urls == ("stun:s.example.org",)
    flags = serve_settings(build_parser().parse_args(
        ["serve", "--turn-url", "turn:c.example.org", "--turn-url", "turn:d.example.org",
         "--rtc-ports", "40000-40001"]))
    assert flags.turn_urls == ["turn:c.example.org", "turn:d.example.org"]
    assert flags.rtc_ports == "40000-40001"
    # The stage child gets them all, as flags.
    child = serve_settings(build_parser().parse_args(
        _child_argv(flags, ["stage"])[_child_argv(flags, ["stage"]).index("serve"):]))
    assert child.ice() == flags.ice()


def test_malformed_setting_stops_serve_with_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["serve", "--data", str(tmp_path), "--turn-url", "turn:bad host"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("townhall: --turn-url (TOWNHALL_TURN_URL)")
    assert not (tmp_path / "nats").exists()  # nothing started


def test_malformed_environment_twin_stops_serve_too(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWNHALL_TURN_TTL", "an hour")
    monkeypatch.setenv("TOWNHALL_RTC_PORTS", "50000-60000")
    assert main(["serve", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("townhall: --turn-ttl (TOWNHALL_TURN_TTL)")
    monkeypatch.setenv("TOWNHALL_TURN_TTL", "600")
    monkeypatch.setenv("TOWNHALL_RTC_PORTS", "60000-50000")
    assert main(["serve", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("townhall: --rtc-ports (TOWNHALL_RTC_PORTS)")
