"""`townhall cluster up/down/status`: a townhall cluster on loopback, for development,
tests and demos. Processes are detached; the plan and pids live in ``<root>/cluster.json``."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from townhall.bus.credentials import (
    USERS_FILE,
    admin_auth,
    load_or_create_users,
    write_private,
)
from townhall.bus.embedded import free_port, nats_server_binary, wait_for_port
from townhall.cluster.plan import ClusterPlan, make_plan
from townhall.procs import alive, stop_pid

STATE_FILE = "cluster.json"


def _spawn(argv: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def load(root: Path) -> ClusterPlan | None:
    """The saved plan of the cluster under ``root``; None if none was started there."""
    path = root / STATE_FILE
    if not path.exists():
        return None
    return ClusterPlan.from_json(json.loads(path.read_text()))


def save(plan: ClusterPlan) -> None:
    """Save ``plan`` (with its process ids) under its root, for ``stop`` and ``status``."""
    path = Path(plan.root) / STATE_FILE
    path.write_text(json.dumps(plan.to_json(), indent=2))


def users_file(plan: ClusterPlan) -> Path:
    """Passwords of the cluster's NATS users (mode 0600), shared by its processes."""
    return Path(plan.root) / "data" / USERS_FILE


def write_nats_configs(plan: ClusterPlan) -> None:
    """Each node's config (0600, in its 0700 store): users, and routes with a fresh
    password for this `cluster up`."""
    users = load_or_create_users(users_file(plan).parent)
    route_password = secrets.token_urlsafe(32)
    for node in plan.nats:
        store = Path(node.store)
        store.mkdir(parents=True, exist_ok=True)
        store.chmod(0o700)
        config = node.config(plan.nats, users, route_password)
        write_private(Path(node.config_path), json.dumps(config, indent=2).encode())


def start_nats_node(plan: ClusterPlan, name: str) -> None:
    """(Re)start one nats node of the plan (its config written by ``up``)."""
    node = next(n for n in plan.nats if n.name == name)
    argv = node.argv(nats_server_binary())
    plan.pids[node.name] = _spawn(argv, Path(plan.root) / "logs" / f"{node.name}.log")


def start_proc(plan: ClusterPlan, name: str) -> None:
    """(Re)start one townhall process of the plan."""
    proc = next(p for p in plan.procs if p.name == name)
    argv = proc.argv(sys.executable, str(Path(plan.root) / "data"), plan.nats_urls,
                     plan.replicas, auth_file=str(users_file(plan)))
    plan.pids[proc.name] = _spawn(argv, Path(plan.root) / "logs" / f"{proc.name}.log")


def wait_healthy(plan: ClusterPlan, timeout: float = 60.0) -> None:
    """Wait until every HTTP process answers /healthz with 200 (stages: alive)."""
    deadline = time.monotonic() + timeout
    pending = [p for p in plan.procs if p.roles != "stage"]
    while pending and time.monotonic() < deadline:
        for proc in list(pending):
            pid = plan.pids.get(proc.name, 0)
            if not alive(pid):
                raise RuntimeError(f"{proc.name} exited; see {plan.root}/logs/{proc.name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{proc.port}/healthz",
                             timeout=1).status_code == 200:
                    pending.remove(proc)
        time.sleep(0.2)
    if pending:
        names = ", ".join(p.name for p in pending)
        raise TimeoutError(f"not healthy after {timeout}s: {names}")


def up(root: Path, *, nats_nodes: int = 3, apis: int = 2, edges: int = 3,
       stages: int = 2, timeout: float = 90.0,
       stage_max_spaces: int | None = None) -> ClusterPlan:
    """Start a cluster under ``root`` and wait until it is healthy."""
    existing = load(root)
    if existing and any(alive(pid) for pid in existing.pids.values()):
        raise RuntimeError(f"a cluster is already running under {root}; "
                           "`townhall cluster down` first")
    root.mkdir(parents=True, exist_ok=True)
    handed_out: set[int] = set()

    def distinct_port() -> int:
        # Ports are chosen before anything binds them: never hand the same one out twice.
        port = free_port(avoid=frozenset(handed_out))
        handed_out.add(port)
        return port

    plan = make_plan(root, nats_nodes=nats_nodes, apis=apis, edges=edges, stages=stages,
                     port_for=distinct_port, stage_max_spaces=stage_max_spaces)
    save(plan)
    try:
        write_nats_configs(plan)
        for node in plan.nats:
            start_nats_node(plan, node.name)
        save(plan)
        for node in plan.nats:
            wait_for_port("127.0.0.1", node.port, 20)
        # JetStream needs its meta group elected before the first process creates streams.
        _wait_jetstream(plan, timeout=30)
        for proc in plan.procs:
            start_proc(plan, proc.name)
        save(plan)
        wait_healthy(plan, timeout)
    except BaseException:
        down(root)
        raise
    return plan


def _wait_jetstream(plan: ClusterPlan, timeout: float) -> None:
    import asyncio

    from townhall.bus import NatsBus

    async def probe() -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                bus = await NatsBus.connect(plan.nats_urls, name="townhall-cluster-up",
                                        replicas=plan.replicas,
                                        auth=admin_auth(users_file(plan)))
                await bus.close()
                return
            except Exception as exc:  # the meta leader is not elected yet
                last = exc
                await asyncio.sleep(0.5)
        raise TimeoutError(f"JetStream not ready after {timeout}s: {last}")

    asyncio.run(probe())


def down(root: Path) -> int:
    """Stop every process of the cluster under ``root``; returns how many were running."""
    plan = load(root)
    if plan is None:
        return 0
    running = 0
    townhall = [p.name for p in plan.procs]
    # townhall processes first (they flush to NATS), then the NATS nodes.
    for name in townhall + [n.name for n in plan.nats]:
        pid = plan.pids.get(name)
        if pid and alive(pid):
            running += 1
            stop_pid(pid)
    plan.pids.clear()
    save(plan)
    return running


def status(plan: ClusterPlan) -> list[dict[str, str]]:
    """One row per process: name, kind, port, pid, state."""
    rows = []
    for node in plan.nats:
        pid = plan.pids.get(node.name, 0)
        rows.append({"name": node.name, "kind": "nats", "address": node.url, "pid": str(pid),
                     "state": "up" if pid and alive(pid) else "down"})
    for proc in plan.procs:
        pid = plan.pids.get(proc.name, 0)
        state = "up" if pid and alive(pid) else "down"
        if state == "up" and proc.roles != "stage":
            try:
                ok = httpx.get(f"http://127.0.0.1:{proc.port}/healthz", timeout=1).is_success
                state = "healthy" if ok else "unhealthy"
            except httpx.HTTPError:
                state = "starting"
        address = f"http://127.0.0.1:{proc.port}" if proc.roles != "stage" else "-"
        rows.append({"name": proc.name, "kind": proc.roles, "address": address,
                     "pid": str(pid), "state": state})
    return rows
