"""Entry point of the ``townhall`` command; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from townhall import __version__
from townhall.cluster.leaders import parse_nodes
from townhall.ice import IceSettingError
from townhall.settings import (
    ALL_ROLES,
    LOOPBACK_PROXIES,
    STAGE_MAX_SPACES,
    Settings,
    parse_budget,
    parse_duration,
)

# Subcommand modules beyond serve/token: each has add_parser(subparsers) setting func=.
SUBCOMMANDS: list[str] = [
    "townhall.cli.cluster",
    "townhall.cli.speak",
    "townhall.cli.listen",
    "townhall.cli.replay",
    "townhall.cli.storm",
    "townhall.cli.watch",
    "townhall.cli.deploy",
]


def is_loopback(host: str) -> bool:
    """Whether serving on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_exposure(host: str, public_url: str) -> str | None:
    """What makes this server reachable from elsewhere (a non-loopback --host, or a
    --public-url naming another host: a reverse proxy on this machine), or None."""
    if not is_loopback(host):
        return host
    named = urlsplit(public_url).hostname if public_url else None
    if named and not is_loopback(named):
        return public_url
    return None


def serve_settings(args: argparse.Namespace) -> Settings:
    """Settings for ``townhall serve``; raises ValueError on an unknown role or a
    malformed value."""
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    unknown = set(roles) - set(ALL_ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(ALL_ROLES)}")
    # Guest sessions are the default on loopback only: anywhere else anyone who can reach
    # the port could host Spaces, so that takes an explicit --open.
    closed = args.closed or not (args.open or public_exposure(args.host, args.public_url)
                                 is None)
    proxies = tuple(p.strip() for p in args.trusted_proxies.split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(f"--trusted-proxies: {proxy!r} is not an address or CIDR") \
                from None
    settings = Settings(data_dir=Path(args.data), host=args.host, port=args.port,
                        nats_urls=[u for u in (args.nats or "").split(",") if u],
                        roles=roles, closed=closed, public_url=args.public_url,
                        replicas=args.replicas, log_level=args.log_level,
                        trusted_proxies=proxies,
                        ended_retention=parse_duration(args.ended_retention),
                        space_budget=parse_budget(args.space_budget),
                        space_budget_address=parse_budget(args.space_budget_per_address),
                        recording_days=args.recording_days, nats_timeout=args.nats_timeout)
    if not 0 < settings.nats_timeout <= 300:
        raise ValueError("--nats-timeout: seconds, more than 0 and at most 300")
    if args.nats_creds or args.nats_auth_file:
        # Flags beat the environment as a pair: a stage child handed the embedded users
        # file must not pick up a TOWNHALL_NATS_CREDS it inherited.
        settings.nats_creds = Path(args.nats_creds) if args.nats_creds else None
        settings.nats_auth_file = Path(args.nats_auth_file) if args.nats_auth_file else None
    if args.node_id:
        settings.node_id = args.node_id
    settings.nats_leader_nodes = parse_nodes(args.nats_leader_nodes)
    settings.stages = _whole(args.stages, "--stages", least=1) if args.stages else None
    settings.stage_max_spaces = _whole(args.stage_max_spaces, "--stage-max-spaces", least=0)
    ice_settings(settings, args)
    _webhook_settings(settings, args)
    _tls_settings(settings, args)
    return settings


def _whole(text: str, flag: str, *, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        n = least - 1
    if n < least:
        raise ValueError(f"{flag}: expected a whole number >= {least}, got {text!r}")
    return n


def _tls_settings(settings: Settings, args: argparse.Namespace) -> None:
    for name in ("nats_tls_ca", "nats_tls_cert", "nats_tls_key"):
        if getattr(args, name):
            setattr(settings, name, Path(getattr(args, name)))
    if (settings.nats_tls_cert is None) != (settings.nats_tls_key is None):
        raise ValueError("--nats-tls-cert and --nats-tls-key go together")
    if settings.nats_tls_cert is not None and settings.nats_tls_ca is None:
        raise ValueError("--nats-tls-cert needs --nats-tls-ca")


def _webhook_settings(settings: Settings, args: argparse.Namespace) -> None:
    if args.webhooks:
        settings.webhooks = Path(args.webhooks)
    if settings.webhooks is not None and "api" in settings.roles \
            and not settings.webhooks.is_file():
        raise ValueError(f"--webhooks: no file {settings.webhooks}")


def _env_list(name: str) -> list[str]:
    return [u.strip() for u in os.environ.get(name, "").split(",") if u.strip()]


def add_ice_flags(serve: argparse.ArgumentParser) -> None:
    """ICE flags of `townhall serve`; each defaults to its TOWNHALL_* twin."""
    ice = serve.add_argument_group("ICE (speakers behind NAT and firewalls)")
    ice.add_argument("--stun-url", action="append", metavar="URL",
                     help="stun: URL handed to speakers and used by the stage (repeatable; "
                          "env TOWNHALL_STUN_URL, comma-separated). Default: none")
    ice.add_argument("--turn-url", action="append", metavar="URL",
                     help="turn:/turns: URL (repeatable; env TOWNHALL_TURN_URL, "
                          "comma-separated); needs --turn-secret-file")
    ice.add_argument("--turn-secret-file", metavar="PATH",
                     default=os.environ.get("TOWNHALL_TURN_SECRET_FILE", ""),
                     help="the secret shared with the TURN server (coturn "
                          "static-auth-secret); credentials are minted per request")
    ice.add_argument("--turn-ttl", metavar="S",
                     default=os.environ.get("TOWNHALL_TURN_TTL", "3600"),
                     help="lifetime of minted TURN credentials (default 3600)")
    ice.add_argument("--public-ip", metavar="ADDR",
                     default=os.environ.get("TOWNHALL_PUBLIC_IP", ""),
                     help="address the stage announces in its candidates (1:1 NAT)")
    ice.add_argument("--rtc-ports", metavar="LOW-HIGH",
                     default=os.environ.get("TOWNHALL_RTC_PORTS", ""),
                     help="UDP ports the stage binds for speakers (default: any)")


def ice_settings(settings: Settings, args: argparse.Namespace) -> None:
    """Copy the ICE flags (or their environment twins) into ``settings``."""
    settings.stun_urls = args.stun_url or _env_list("TOWNHALL_STUN_URL")
    settings.turn_urls = args.turn_url or _env_list("TOWNHALL_TURN_URL")
    settings.turn_secret_file = args.turn_secret_file
    try:
        settings.turn_ttl = int(args.turn_ttl)
    except ValueError:
        raise IceSettingError("turn_ttl", f"{args.turn_ttl!r} is not a number of "
                                          "seconds") from None
    settings.public_ip = args.public_ip
    settings.rtc_ports = args.rtc_ports


def _serve(args: argparse.Namespace) -> int:
    from townhall.serve import run

    try:
        settings = serve_settings(args)
        settings.ice()  # a malformed ICE setting stops here, named, before anything starts
    except ValueError as exc:
        print(f"townhall: {exc}", file=sys.stderr)
        return 2
    exposed = public_exposure(settings.host, settings.public_url)
    if settings.closed and not args.closed and "api" in settings.roles and exposed:
        print(f"townhall: guest sessions are off when serving on {exposed} "
              "(not loopback); --open turns them on", file=sys.stderr)
    return run(settings)


def _token(args: argparse.Namespace) -> int:
    from townhall.auth import TokenIssuer, load_or_create_secret, valid_identity

    if not valid_identity(args.identity):
        print("townhall: --identity must be 1-64 of A-Z a-z 0-9 _ . : @ -", file=sys.stderr)
        return 2
    issuer = TokenIssuer(load_or_create_secret(Path(args.data)))
    print(issuer.mint(args.identity, args.name or args.identity, space=args.space,
                      role=args.role, ttl=args.ttl))
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (the subcommand about to run), the other
    subcommands' modules are not imported: some pull in aiortc, PyAV or NumPy, and every
    `townhall serve` (its stage child too) and `townhall speak` would pay for them."""
    parser = argparse.ArgumentParser(prog="townhall", description=__doc__)
    parser.add_argument("--version", action="version", version=f"townhall {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run townhall (all roles, embedded NATS by default)")
    serve.add_argument("--data", default=Settings.data_dir.__str__(),
                       help="data directory (default ./townhall-data)")
    serve.add_argument("--host", default=Settings.host)
    serve.add_argument("--port", type=int, default=Settings.port)
    serve.add_argument("--nats", default="",
                       help="NATS URL[,URL...] of an existing cluster (default: embedded)")
    serve.add_argument("--nats-creds", default="",
                       help="a NATS .creds file for --nats (or TOWNHALL_NATS_CREDS)")
    serve.add_argument("--nats-auth-file", default="",
                       help='a JSON file {"user", "password"} or {"token"} for --nats '
                            "(or TOWNHALL_NATS_AUTH_FILE); secrets never go on argv")
    serve.add_argument("--nats-timeout", type=float, default=Settings.nats_timeout,
                       metavar="SECONDS",
                       help="how long a NATS request may go unanswered before the api "
                            "answers 503 + Retry-After (or TOWNHALL_NATS_TIMEOUT; default 10)")
    serve.add_argument("--nats-leader-nodes", metavar="NAME[,NAME]",
                       default=os.environ.get("TOWNHALL_NATS_LEADER_NODES", ""),
                       help="NATS server names on hosts that run no stage: an api keeps "
                            "the leaders of the leases, MEDIA and Spaces streams there, "
                            "so a lost stage host never takes one with it (or "
                            "TOWNHALL_NATS_LEADER_NODES; default: leaders stay put)")
    serve.add_argument("--roles", default=",".join(ALL_ROLES),
                       help=f"comma-separated roles to run (default {','.join(ALL_ROLES)})")
    guests = serve.add_mutually_exclusive_group()
    guests.add_argument("--closed", action="store_true",
                        help="no guest sessions: every token comes from `townhall token` "
                             "(the default when --host is not loopback)")
    guests.add_argument("--open", action="store_true",
                        help="guest sessions (POST /api/v1/sessions) even when --host is "
                             "not loopback")
    serve.add_argument("--public-url", default="", help="URL clients reach this process at")
    serve.add_argument("--replicas", type=int, default=1,
                       help="JetStream replicas for streams and buckets (3 in a cluster)")
    serve.add_argument("--node-id", default="", help="stable name of this process")
    serve.add_argument("--log-level", default=Settings.log_level)
    serve.add_argument("--recording-days", type=float, default=Settings.recording_days,
                       help="days a finished recording is kept, then 410 (default 30)")
    env = os.environ.get
    serve.add_argument("--trusted-proxies", metavar="CIDR[,CIDR]",
                       default=env("TOWNHALL_TRUSTED_PROXIES", ",".join(LOOPBACK_PROXIES)),
                       help="proxies whose X-Forwarded-For/Forwarded names the client "
                            "(default loopback)")
    serve.add_argument("--ended-retention", metavar="DURATION",
                       default=env("TOWNHALL_ENDED_RETENTION", "7d"),
                       help="delete ended (and never-started) Spaces after this long, "
                            "e.g. 7d, 12h, 90s; 0 keeps them (default 7d)")
    serve.add_argument("--space-budget", metavar="BURST/SECONDS",
                       default=env("TOWNHALL_SPACE_BUDGET", "5/60"),
                       help="Spaces one identity may create: BURST, then one every "
                            "SECONDS (default 5/60)")
    serve.add_argument("--space-budget-per-address", metavar="BURST/SECONDS",
                       default=env("TOWNHALL_SPACE_BUDGET_PER_ADDRESS", "30/10"),
                       help="the same per client address (default 30/10)")
    stages = serve.add_argument_group("stages (mixing)")
    stages.add_argument("--stages", metavar="N", default=env("TOWNHALL_STAGES", ""),
                        help="stage processes to run beside the HTTP roles, each a core "
                             "(default: the cores this process may use minus one, at "
                             "least 1; with --roles stage alone: 1, in this process)")
    stages.add_argument("--stage-max-spaces", metavar="N",
                        default=env("TOWNHALL_STAGE_MAX_SPACES", str(STAGE_MAX_SPACES)),
                        help="live Spaces one stage takes at most; a Space no stage has "
                             f"room for waits for one (default {STAGE_MAX_SPACES}; 0: "
                             "no limit)")
    add_ice_flags(serve)
    tls = serve.add_argument_group("TLS to NATS (an external cluster across hosts)")
    tls.add_argument("--nats-tls-ca", default="",
                     help="CA certificate of the NATS servers; connect with TLS "
                          "(or TOWNHALL_NATS_TLS_CA)")
    tls.add_argument("--nats-tls-cert", default="",
                     help="client certificate, where the servers verify clients "
                          "(or TOWNHALL_NATS_TLS_CERT)")
    tls.add_argument("--nats-tls-key", default="",
                     help="its private key (or TOWNHALL_NATS_TLS_KEY)")
    hooks = serve.add_argument_group("webhooks")
    hooks.add_argument("--webhooks", default="",
                       help="a JSON file of webhook endpoints (or TOWNHALL_WEBHOOKS); "
                            "see docs/api.md")
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="mint an access token for your own app to hand out")
    token.add_argument("--identity", required=True)
    token.add_argument("--name", default="")
    token.add_argument("--space", default=None, help="limit the token to one Space")
    token.add_argument("--role", choices=["host", "speaker", "listener"], default="host")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 1 day)")
    token.add_argument("--data", default=str(Settings.data_dir))
    token.set_defaults(func=_token)

    for module_name in SUBCOMMANDS:
        if command is None or module_name.rpartition(".")[2] == command:
            importlib.import_module(module_name).add_parser(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, when it names one (help and mistakes get them all)."""
    first = argv[0] if argv else ""
    known = {"serve", "token", *(m.rpartition(".")[2] for m in SUBCOMMANDS)}
    return first if first in known else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``townhall`` command line; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
