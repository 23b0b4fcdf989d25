"""``townhall serve``: the embedded NATS, the HTTP roles in this process, the stage in
processes of their own (``--stages N``, one per core the HTTP roles leave, started again
if one dies). Stops cleanly on SIGINT/SIGTERM, orphaning nothing."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import uvicorn
import uvloop

from townhall.app import HTTP_PLUGINS, build_app
from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.bus import NatsAuth, NatsBus
from townhall.bus.credentials import (
    USERS_FILE,
    admin_auth,
    load_auth_file,
    load_or_create_users,
)
from townhall.bus.embedded import EmbeddedNats, die_with_parent
from townhall.bus.tls import NatsTls
from townhall.context import Context
from townhall.edge.guard import idle_timeout_from_env
from townhall.edge.handoff import http_protocol
from townhall.observability import setup_logging
from townhall.procs import Supervisor
from townhall.settings import Settings

log = logging.getLogger(__name__)

# Roles that run without HTTP, each an async ``run(ctx)`` that returns when cancelled.
BACKGROUND_ROLES: dict[str, str] = {"stage": "townhall.stage.role:run"}


def _runner(role: str) -> Callable[[Context], Coroutine[Any, Any, None]]:
    module_name, _, attr = BACKGROUND_ROLES[role].partition(":")
    fn: Any = getattr(importlib.import_module(module_name), attr)
    return fn


def nats_auth(settings: Settings, roles: Iterable[str]) -> NatsAuth | None:
    """What a process running ``roles`` shows NATS: read from files, never from argv."""
    if settings.nats_creds is not None:
        return NatsAuth(creds=settings.nats_creds)
    if settings.nats_auth_file is not None:
        return load_auth_file(settings.nats_auth_file, roles)
    return None


def nats_tls(settings: Settings) -> NatsTls | None:
    """Client TLS to NATS when the operator gave a CA (never for the embedded server)."""
    if settings.nats_tls_ca is None:
        return None
    return NatsTls(ca=settings.nats_tls_ca, cert=settings.nats_tls_cert,
                   key=settings.nats_tls_key)


async def make_context(settings: Settings, roles: Iterable[str] | None = None) -> Context:
    """Connect as the NATS user for the roles that run in this process (default: all of
    settings.roles); ``townhall serve`` runs its stage elsewhere, so not as that one."""
    here = list(roles) if roles is not None else list(settings.roles)
    bus = await NatsBus.connect(settings.nats_urls, name=f"townhall-{'+'.join(here)}",
                                replicas=settings.replicas, auth=nats_auth(settings, here),
                                tls=nats_tls(settings), timeout=settings.nats_timeout)
    issuer = TokenIssuer(load_or_create_secret(settings.data_dir))
    return Context(settings=settings, bus=bus, issuer=issuer)


async def _serve_http(settings: Settings, background: list[str]) -> None:
    ctx = await make_context(settings,
                             [r for r in settings.roles if r in HTTP_PLUGINS] + background)
    tasks: list[asyncio.Task[None]] = []

    async def start_background() -> None:
        for role in background:
            tasks.append(asyncio.create_task(_runner(role)(ctx), name=f"role-{role}"))

    async def stop_background() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    ctx.on_start.append(start_background)
    ctx.on_stop.append(stop_background)
    app = build_app(ctx)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            # listener connections leave ASGI for the edge's own protocols
                            http=http_protocol(getattr(app.state, "edge", None)),
                            ws="websockets", log_config=None,
                            # whose X-Forwarded-For names the client (api/clientaddr.py)
                            forwarded_allow_ips=list(settings.trusted_proxies),
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            # a kept-alive connection waiting for its next request
                            timeout_keep_alive=idle_timeout_from_env(),
                            ws_max_size=64 * 1024,
                            # Chunks are Opus (incompressible) and direct writes bypass the
                            # codec anyway; a zlib context per socket only costs memory and CPU.
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    _serving.set()  # uvicorn's own signal handlers take over from here
    try:
        await server.serve()
    finally:
        await ctx.bus.close()


async def _serve_background(settings: Settings, roles: list[str]) -> None:
    ctx = await make_context(settings, roles)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _serving.set()
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(_runner(role)(ctx), name=f"role-{role}") for role in roles]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in [waiter, *tasks]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await ctx.bus.close()
    for task in done:
        if task is not waiter and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def default_stages(cpus: int, with_http: bool) -> int:
    """Stage processes by default: a core each, but one core is left to the HTTP roles
    (api + edge share one event loop); a stage-only process runs its one stage itself."""
    return max(1, cpus - 1) if with_http else 1


def usable_cpus() -> int:
    """Cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _child_argv(settings: Settings, roles: list[str], node_id: str = "") -> list[str]:
    argv = [sys.executable, "-m", "townhall", "serve", "--roles", ",".join(roles),
            "--nats", ",".join(settings.nats_urls), "--data", str(settings.data_dir),
            "--log-level", settings.log_level, "--replicas", str(settings.replicas),
            "--nats-timeout", str(settings.nats_timeout),
            # Its own stable name: leases, heartbeats and metrics then say which machine's
            # stage this is, not a hostname with a random suffix; a restart keeps it.
            "--node-id", node_id or f"{settings.node_id}-{'-'.join(roles)}",
            # Explicit, so that a TOWNHALL_STAGES inherited from us is not obeyed again.
            "--stages", "1", "--stage-max-spaces", str(settings.stage_max_spaces)]
    if settings.public_url:
        argv += ["--public-url", settings.public_url]
    # Paths only: the child reads the secrets itself (argv is world-readable in /proc).
    if settings.nats_creds is not None:
        argv += ["--nats-creds", str(settings.nats_creds)]
    if settings.nats_auth_file is not None:
        argv += ["--nats-auth-file", str(settings.nats_auth_file)]
    for flag, path in (("--nats-tls-ca", settings.nats_tls_ca),
                       ("--nats-tls-cert", settings.nats_tls_cert),
                       ("--nats-tls-key", settings.nats_tls_key)):
        if path is not None:
            argv += [flag, str(path)]
    argv += ice_argv(settings)
    return argv


def ice_argv(settings: Settings) -> list[str]:
    """The ICE settings as flags (the stage child binds ports and announces addresses)."""
    argv = [f"--stun-url={u}" for u in settings.stun_urls]
    argv += [f"--turn-url={u}" for u in settings.turn_urls]
    for flag, value in (("--turn-secret-file", settings.turn_secret_file),
                        ("--public-ip", settings.public_ip),
                        ("--rtc-ports", settings.rtc_ports)):
        if value:
            argv.append(f"{flag}={value}")
    return [*argv, f"--turn-ttl={settings.turn_ttl}"]


def _start_embedded_nats(settings: Settings) -> EmbeddedNats:
    """Start nats-server with generated users; every role of this machine then connects
    through the users file, and the topology exists before any of them does."""
    users = load_or_create_users(settings.data_dir)
    # Never the HTTP port: it is chosen but not bound yet, and the kernel may offer it
    # again as a free port.
    nats = EmbeddedNats(settings.data_dir / "nats", avoid_ports=frozenset({settings.port}),
                        users=users)
    settings.nats_urls = [nats.start()]
    settings.nats_creds = None
    # The embedded server is plain TCP on loopback: a TLS setting meant for a cluster
    # (say, inherited from the environment) must not stop it working.
    settings.nats_tls_ca = settings.nats_tls_cert = settings.nats_tls_key = None
    settings.nats_auth_file = settings.data_dir / USERS_FILE
    admin = admin_auth(settings.nats_auth_file)

    async def create_topology() -> None:
        # Stages and edges may not create or change buckets (bus/permissions.py): the
        # admin user does it once here, before they start.
        bus = await NatsBus.connect(settings.nats_urls, name="townhall-setup",
                                replicas=settings.replicas, auth=admin)
        await bus.close()

    try:
        asyncio.run(create_topology())
    except BaseException:
        nats.stop()
        raise
    return nats


# Set once the running roles handle SIGINT/SIGTERM themselves (uvicorn, or the background
# roles' loop); until then run()'s handler stops the process at once.
_serving = threading.Event()


def run(settings: Settings) -> int:
    """Run the roles named in settings until signalled; returns the exit status."""
    setup_logging(settings.log_level, role="+".join(settings.roles))
    # `kill -USR1 <pid>` prints every thread's Python stack to stderr: what a process that
    # will not stop (or not answer) is doing, without restarting it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # uvicorn re-raises the signal it caught once it has shut down; note it instead of
    # dying there, so the finally below still stops the stage and nats-server.
    # Before that (e.g. while NATS refuses or does not answer the first connect) a signal
    # must still stop the process: it would otherwise wait for NATS forever, deaf to SIGTERM.
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not _serving.is_set():
            raise KeyboardInterrupt
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    nats: EmbeddedNats | None = None
    children = Supervisor()
    try:
        if not settings.nats_urls:
            nats = _start_embedded_nats(settings)
        http_roles = [r for r in settings.roles if r in HTTP_PLUGINS]
        background = [r for r in settings.roles if r in BACKGROUND_ROLES]
        stages = settings.stages or default_stages(usable_cpus(), bool(http_roles))
        if "stage" in background and (http_roles or stages > 1):
            # The speaker path never shares an event loop with listener fan-out, and each
            # stage has a core of its own.
            background.remove("stage")
            for i in range(1, stages + 1):
                node = f"{settings.node_id}-stage-{i}"
                children.keep(node, _child_argv(settings, ["stage"], node),
                              stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        if http_roles:
            # uvloop: every listener's transport (joins, slow listeners' backlogs, text
            # frames; the fast set's sends go to the socket directly) is C where asyncio's
            # selector transport is Python (measured in docs/edge.md). uvicorn's
            # loop="uvloop" only applies when uvicorn makes the loop itself; here we make it.
            uvloop.run(_serve_http(settings, background))
        elif background:
            asyncio.run(_serve_background(settings, background))
        elif children.procs:  # `--roles stage --stages N`: only the children work
            while True:
                signal.pause()  # until SIGINT/SIGTERM (KeyboardInterrupt, below)
        else:
            log.error("no runnable role in %s", settings.roles)
            return 2
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        children.stop()
        if nats is not None:
            nats.stop()
