"""Settings shared by every role, from flags and TOWNHALL_* environment variables."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from townhall.ice import IceConfig

ALL_ROLES = ("api", "stage", "edge")


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
    roles: tuple[str, ...] = ALL_ROLES
    closed: bool = False
    public_url: str = ""
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    replicas: int = 1
    log_level: str = os.environ.get("TOWNHALL_LOG_LEVEL", "info")
    # How long a finished recording (and its clips) is kept; then it answers 410.
    recording_days: float = float(os.environ.get("TOWNHALL_RECORDING_DAYS", "30"))

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

    @property
    def open_mode(self) -> bool:
        """Guest sessions are on unless --closed."""
        return not self.closed

    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
