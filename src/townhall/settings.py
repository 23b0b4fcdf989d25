"""Settings shared by every role, from flags and TOWNHALL_* environment variables."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from townhall.ice import IceConfig

ALL_ROLES = ("api", "stage", "edge")
LOOPBACK_PROXIES = ("127.0.0.0/8", "::1")
DAY_S = 24 * 3600.0
STAGE_MAX_SPACES = 100


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "15m", "12h" or "7d"; ValueError otherwise."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
    scale = units.get(text[-1:], 0.0)
    value = float(text[:-1] if scale else text) * (scale or 1.0)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return value


def parse_budget(text: str) -> tuple[float, float]:
    """"BURST/SECONDS" (BURST at once, then one every SECONDS) as (burst, rate per s)."""
    burst, _, every = text.partition("/")
    b, s = float(burst), parse_duration(every)
    if not (b >= 1 and s > 0):
        raise ValueError(f"a budget is BURST/SECONDS with BURST >= 1, SECONDS > 0: {text!r}")
    return b, 1.0 / s


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


@dataclass
class Settings:
    """How one townhall process runs."""

    data_dir: Path = Path(os.environ.get("TOWNHALL_DATA", "./townhall-data"))
    host: str = os.environ.get("TOWNHALL_HOST", "127.0.0.1")
    port: int = int(os.environ.get("TOWNHALL_PORT", "8080"))
    nats_urls: list[str] = field(default_factory=list)
    # Credentials for an external NATS, as files (never on argv): a .creds file, or JSON
    # with user/password or a token. The embedded server makes and uses its own.
    nats_creds: Path | None = field(default_factory=lambda: _env_path("TOWNHALL_NATS_CREDS"))
    nats_auth_file: Path | None = field(
        default_factory=lambda: _env_path("TOWNHALL_NATS_AUTH_FILE"))
    # TLS to an external NATS (docs/operations.md "Three hosts"): the CA of its servers'
    # certificates, and this process's certificate where the servers require one.
    nats_tls_ca: Path | None = field(default_factory=lambda: _env_path("TOWNHALL_NATS_TLS_CA"))
    nats_tls_cert: Path | None = field(
        default_factory=lambda: _env_path("TOWNHALL_NATS_TLS_CERT"))
    nats_tls_key: Path | None = field(default_factory=lambda: _env_path("TOWNHALL_NATS_TLS_KEY"))
    # How long a request to NATS may go unanswered (a node cut off, JetStream electing a
    # leader) before the api answers 503 + Retry-After rather than keep its client waiting.
    nats_timeout: float = float(os.environ.get("TOWNHALL_NATS_TIMEOUT", "10"))
    # NATS server names on hosts that run no stage: an api keeps the raft leaders of the
    # streams a failover needs there (townhall.api.leaders). Empty: leaders stay put.
    nats_leader_nodes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ALL_ROLES
    closed: bool = False
    public_url: str = ""
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    replicas: int = 1
    log_level: str = os.environ.get("TOWNHALL_LOG_LEVEL", "info")
    # How long a finished recording (and its clips) is kept; then it answers 410.
    recording_days: float = float(os.environ.get("TOWNHALL_RECORDING_DAYS", "30"))
    # Whose X-Forwarded-For / Forwarded is believed (CIDRs); the rest are clients.
    trusted_proxies: tuple[str, ...] = LOOPBACK_PROXIES
    # Ended (and never-started scheduled) Spaces are deleted this long after; 0 = never.
    ended_retention: float = 7 * DAY_S
    # Space creation: (burst, refill per second) per identity and per client address.
    space_budget: tuple[float, float] = (5.0, 1 / 60)
    space_budget_address: tuple[float, float] = (30.0, 1 / 10)
    # Stage processes `townhall serve` runs beside its HTTP roles (None: the machine's
    # cores minus one for HTTP, at least 1), and the live Spaces one stage takes at most
    # (0: no budget): a floor to raise after measuring, since speakers cost more than the
    # silent Spaces it was set by (docs/operations.md, "Stages: how many").
    stages: int | None = None
    stage_max_spaces: int = STAGE_MAX_SPACES

    # ICE (where speakers' WebRTC finds the stage), raw; townhall.ice validates them.
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret_file: str = ""
    public_ip: str = ""
    rtc_ports: str = ""
    turn_ttl: int = 3600

    def ice(self) -> IceConfig:
        """The validated ICE settings; raises IceSettingError naming a bad one."""
        return IceConfig.parse(stun_urls=self.stun_urls, turn_urls=self.turn_urls,
                               turn_secret_file=self.turn_secret_file,
                               public_ip=self.public_ip, rtc_ports=self.rtc_ports,
                               turn_ttl_s=self.turn_ttl)

    # Webhooks (docs/api.md "Webhooks"): the endpoints file, read by api processes.
    webhooks: Path | None = field(default_factory=lambda: _env_path("TOWNHALL_WEBHOOKS"))

    @property
    def open_mode(self) -> bool:
        """Guest sessions are on unless --closed."""
        return not self.closed

    def base_url(self) -> str:
        """Where clients reach this server: ``--public-url``, else its own address."""
        return self.public_url or f"http://{self.host}:{self.port}"
