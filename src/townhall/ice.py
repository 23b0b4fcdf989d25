"""ICE configuration in one place: the STUN and TURN servers speakers and the stage use,
the public address a stage behind 1:1 NAT announces, and the UDP ports it binds.

No I/O beyond reading the TURN secret file once at start; time is passed in. TURN
credentials follow the "TURN REST API" scheme coturn implements as ``use-auth-secret``:
username ``<expiry unix s>:<identity>``, credential base64(HMAC-SHA1(secret, username)),
so the TURN server checks them with the shared secret and no per-user state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TURN_TTL_S = 3600  # long enough to connect and for a session's allocation refreshes

# The flag and environment variable of each setting, for error messages.
SETTING = {
    "stun_url": "--stun-url (TOWNHALL_STUN_URL)",
    "turn_url": "--turn-url (TOWNHALL_TURN_URL)",
    "turn_secret_file": "--turn-secret-file (TOWNHALL_TURN_SECRET_FILE)",
    "public_ip": "--public-ip (TOWNHALL_PUBLIC_IP)",
    "rtc_ports": "--rtc-ports (TOWNHALL_RTC_PORTS)",
    "turn_ttl": "--turn-ttl (TOWNHALL_TURN_TTL)",
}

# RFC 7064 (stun:) and RFC 7065 (turn:, turns:); a bracketed IPv6 literal or a host name.
_URL = re.compile(r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                  r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?")


class IceSettingError(ValueError):
    """A malformed ICE setting; the message names the setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{SETTING.get(key, key)}: {problem}")
        self.key = key


def parse_ice_url(raw: str, key: str) -> str:
    """``raw`` checked as a URL of the kind ``key`` takes (stun_url or turn_url)."""
    m = _URL.fullmatch(raw.strip())
    if m is None:
        raise IceSettingError(key, f"{raw!r} is not a stun:/turn:/turns: URL "
                                   "(e.g. turn:turn.example.org:3478?transport=udp)")
    scheme = m.group("scheme")
    wanted = ("stun",) if key == "stun_url" else ("turn", "turns")
    if scheme not in wanted:
        raise IceSettingError(key, f"{raw!r}: the scheme must be {' or '.join(wanted)}:")
    if scheme == "stun" and m.group("transport"):
        raise IceSettingError(key, f"{raw!r}: a stun: URL takes no ?transport")
    if scheme == "turns" and m.group("transport") == "udp":
        raise IceSettingError(key, f"{raw!r}: turns: runs over TCP (TLS), not udp")
    host = m.group("host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise IceSettingError(key, f"{raw!r}: {host} is not an IPv6 address") from exc
    elif host.startswith(("-", ".")) or host.endswith("-") or ".." in host:
        raise IceSettingError(key, f"{raw!r}: {host!r} is not a host name")
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise IceSettingError(key, f"{raw!r}: port {port} is out of range")
    return raw.strip()


def parse_port_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH`` → (low, high), both in 1..65535 and low <= high."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text)
    if m is None:
        raise IceSettingError("rtc_ports", f"{text!r} is not LOW-HIGH (e.g. 50000-50100)")
    low, high = int(m.group(1)), int(m.group(2))
    if not 1 <= low <= high <= 65535:
        raise IceSettingError("rtc_ports", f"{text!r}: need 1 <= LOW <= HIGH <= 65535")
    return low, high


def parse_public_ip(text: str) -> str:
    """An address to announce: a unicast IP literal (not a name, not 0.0.0.0)."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise IceSettingError("public_ip", f"{text!r} is not an IP address") from exc
    if ip.is_unspecified or ip.is_multicast:
        raise IceSettingError("public_ip", f"{text!r} cannot be announced")
    return str(ip)


def read_secret(path: str) -> bytes:
    """The TURN shared secret: the file's text, surrounding whitespace removed."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise IceSettingError("turn_secret_file", f"cannot read {path}: "
                                                  f"{exc.strerror or exc}") from exc
    if not secret:
        raise IceSettingError("turn_secret_file", f"{path} is empty")
    return secret


def turn_credentials(secret: bytes, identity: str, expires: int) -> tuple[str, str]:
    """(username, credential) valid until unix time ``expires`` (coturn use-auth-secret)."""
    username = f"{expires}:{identity}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class IceConfig:
    """The validated ICE settings of a deployment."""

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: bytes | None = field(default=None, repr=False)
    public_ip: str | None = None
    rtc_ports: tuple[int, int] | None = None
    turn_ttl_s: int = DEFAULT_TURN_TTL_S

    @classmethod
    def parse(cls, *, stun_urls: list[str], turn_urls: list[str], turn_secret_file: str,
              public_ip: str, rtc_ports: str, turn_ttl_s: int) -> IceConfig:
        """Validate raw settings (flags or environment); raises IceSettingError."""
        stun = tuple(parse_ice_url(u, "stun_url") for u in stun_urls)
        turn = tuple(parse_ice_url(u, "turn_url") for u in turn_urls)
        if turn and not turn_secret_file:
            raise IceSettingError("turn_secret_file", "required with --turn-url: TURN "
                                  "credentials are minted from the secret shared with the "
                                  "TURN server (coturn static-auth-secret)")
        if turn_secret_file and not turn:
            raise IceSettingError("turn_secret_file", "set, but no --turn-url to use it")
        if turn_ttl_s < 60:
            raise IceSettingError("turn_ttl", f"{turn_ttl_s}: at least 60 seconds")
        return cls(stun_urls=stun, turn_urls=turn,
                   turn_secret=read_secret(turn_secret_file) if turn_secret_file else None,
                   public_ip=parse_public_ip(public_ip) if public_ip else None,
                   rtc_ports=parse_port_range(rtc_ports) if rtc_ports else None,
                   turn_ttl_s=turn_ttl_s)

    def expires(self, now: float) -> int:
        """When credentials minted at ``now`` stop working (unix seconds)."""
        return int(now) + self.turn_ttl_s

    def servers(self, identity: str, now: float) -> list[dict[str, Any]]:
        """RTCIceServer dictionaries (the browser's shape) for ``identity`` at ``now``;
        an empty list when nothing is configured."""
        out: list[dict[str, Any]] = []
        if self.stun_urls:
            out.append({"urls": list(self.stun_urls)})
        if self.turn_urls and self.turn_secret is not None:
            username, credential = turn_credentials(self.turn_secret, identity,
                                                    self.expires(now))
            out.append({"urls": list(self.turn_urls), "username": username,
                        "credential": credential})
        return out


def link_headers(servers: list[dict[str, Any]]) -> list[str]:
    """The servers as WHIP ``Link`` header values (RFC 9725 §4.6), one per URL."""
    values = []
    for server in servers:
        for url in server["urls"]:
            value = f'<{url}>; rel="ice-server"'
            if "username" in server:
                value += (f'; username="{server["username"]}"; '
                          f'credential="{server["credential"]}"; '
                          'credential-type="password"')
            values.append(value)
    return values


def parse_link_headers(values: list[str]) -> list[dict[str, Any]]:
    """WHIP ``Link`` header values back into RTCIceServer dictionaries (one per URL);
    links that are not ``rel="ice-server"`` are skipped."""
    out: list[dict[str, Any]] = []
    for header in values:
        for link in re.findall(r'<[^>]*>(?:\s*;\s*[\w-]+="[^"]*")*', header):
            url = link[1:link.index(">")]
            params = dict(re.findall(r';\s*([\w-]+)="([^"]*)"', link))
            if params.get("rel") != "ice-server":
                continue
            server: dict[str, Any] = {"urls": [url]}
            if "username" in params:
                server |= {"username": params["username"],
                           "credential": params.get("credential", "")}
            out.append(server)
    return out


def announce(sdp: str, public_ip: str) -> str:
    """The SDP with ``public_ip`` in place of the address of every host candidate of its
    family, as mediasoup's announcedIp does: behind 1:1 NAT the stage's own address is
    private, and the NAT maps the public address's ports to the same ports inside."""
    version = ipaddress.ip_address(public_ip).version

    def swap(m: re.Match[str]) -> str:
        try:
            same_family = ipaddress.ip_address(m.group(2)).version == version
        except ValueError:
            return m.group(0)
        return f"{m.group(1)}{public_ip}{m.group(3)}" if same_family else m.group(0)

    # Only candidate lines: ICE agents ignore the c= line's default address (RFC 8839).
    return re.sub(r"(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host)", swap, sdp,
                  flags=re.I)
