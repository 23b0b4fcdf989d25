"""``townhall storm``: simulated listeners, reactions and requests against a live Space."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from townhall.storm.run import StormArgs, main

    if args.page_poll and args.protocol != "browser":
        args.protocol = "browser"  # polling is something a page does
    return main(StormArgs(url=args.url.rstrip("/"), space=args.space,
                          listeners=args.listeners, ramp=args.ramp, hold=args.hold,
                          protocol=args.protocol, reactions=args.reactions,
                          requests=args.requests, workers=args.workers,
                          report=Path(args.report) if args.report else None,
                          server_pid=args.server_pid, stay=args.stay,
                          page_poll=args.page_poll, api_pid=args.api_pid))


def add_parser(sub: Any) -> None:
    """Register the storm subcommand."""
    p = sub.add_parser("storm", help="rehearse the big night: simulated crowds and a report")
    p.add_argument("--url", required=True, help="townhall base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--space", required=True, help="Space id")
    p.add_argument("--listeners", type=int, default=100)
    p.add_argument("--ramp", type=float, default=10.0, help="seconds to start all listeners")
    p.add_argument("--hold", type=float, default=20.0, help="seconds to stay after the ramp")
    p.add_argument("--stay", type=float, default=None,
                   help="mean seconds an admitted listener stays before leaving for good "
                        "(exponential, seeded); default: everyone stays to the end")
    p.add_argument("--protocol", choices=["ws", "ogg", "mix", "browser"], default="ws",
                   help="ws/ogg/mix: sockets only; browser: what the web app does on a "
                        "shared link (page, assets, snapshot, where to listen, socket)")
    p.add_argument("--page-poll", type=float, default=0.0, metavar="S",
                   help="browser viewers also GET the snapshot every S s while open, as the "
                        "previous web app did (the reference for --protocol browser)")
    p.add_argument("--reactions", type=float, default=0.0, help="reactions per second")
    p.add_argument("--requests", type=float, default=0.0, help="requests to speak per second")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--report", default="", help="directory for report.json, plots, index.html")
    p.add_argument("--server-pid", type=int, default=None,
                   help="server pid for CPU/memory (default: found from the URL's port)")
    p.add_argument("--api-pid", type=int, default=None,
                   help="the api's process for api CPU per viewer-minute (default: the "
                        "server's own process, without its children)")
    p.set_defaults(func=_run)
