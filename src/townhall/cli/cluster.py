"""`townhall cluster up|down|status`: a local townhall cluster on loopback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _table(rows: list[dict[str, str]]) -> Table:
    table = Table(title="townhall cluster")
    for col in ("name", "kind", "address", "pid", "state"):
        table.add_column(col)
    for row in rows:
        color = {"healthy": "green", "up": "green", "down": "red"}.get(row["state"], "yellow")
        table.add_row(row["name"], row["kind"], row["address"], row["pid"],
                      f"[{color}]{row['state']}[/]")
    return table


def _run(args: argparse.Namespace) -> int:
    from townhall.cluster import local

    console = Console()
    root = Path(args.dir)
    if args.action == "up":
        with console.status(f"starting {args.nats_nodes} NATS nodes, {args.apis} api, "
                            f"{args.edges} edge, {args.stages} stage processes..."):
            try:
                plan = local.up(root, nats_nodes=args.nats_nodes, apis=args.apis,
                                edges=args.edges, stages=args.stages,
                                stage_max_spaces=args.stage_max_spaces)
            except (RuntimeError, TimeoutError) as exc:
                print(f"townhall cluster: {exc}", file=sys.stderr)
                return 1
        console.print(_table(local.status(plan)))
        console.print(f"logs: {root / 'logs'}   stop: townhall cluster down --dir {root}")
        return 0
    if args.action == "down":
        stopped = local.down(root)
        console.print(f"stopped {stopped} process(es)")
        return 0
    found = local.load(root)
    if found is None:
        print(f"townhall cluster: no cluster under {root}", file=sys.stderr)
        return 1
    console.print(_table(local.status(found)))
    return 0


def _count(text: str) -> int:
    """A process count: a cluster needs at least one of each kind."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def add_parser(sub: Any) -> None:
    """Add ``townhall cluster`` to the subcommands ``sub``."""
    p = sub.add_parser("cluster", help="a local townhall cluster on loopback (dev, tests, demos)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dir", default="./townhall-cluster", help="logs, stores and state")
    p.add_argument("--nats-nodes", type=_count, default=3)
    p.add_argument("--apis", type=_count, default=2)
    p.add_argument("--edges", type=_count, default=3)
    p.add_argument("--stages", type=_count, default=2,
                   help="stage processes (each mixes its share of the live Spaces)")
    p.add_argument("--stage-max-spaces", type=int, default=None, metavar="N",
                   help="live Spaces one stage takes at most (default: serve's; 0: no limit)")
    p.set_defaults(func=_run)
