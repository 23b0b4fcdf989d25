"""``townhall deploy``: write each host's nats-server config and systemd units for the
hosts in a JSON file (townhall.deploy.plan), into a tree per host to copy onto its root."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from townhall.bus.credentials import write_private
from townhall.deploy.plan import Layout, parse_plan
from townhall.deploy.render import Secrets, render

SECRETS_FILE = "secrets.json"


def write_tree(out: Path, plan_text: str, layout: Layout) -> list[Path]:
    """Write every host's files under ``out/<host>/``; returns the paths written."""
    plan = parse_plan(plan_text, layout)
    out.mkdir(parents=True, exist_ok=True)
    kept = out / SECRETS_FILE
    if kept.exists():
        sec = Secrets.from_json(kept.read_text())
    else:
        sec = Secrets.generate()
    write_private(kept, sec.to_json().encode())
    written = []
    for host, files in render(plan, sec).items():
        for f in files:
            path = out / host / f.path.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if f.mode & 0o077:
                path.write_text(f.text)
                os.chmod(path, f.mode)
            else:
                write_private(path, f.text.encode())
            written.append(path)
    return written


def _run(args: argparse.Namespace) -> int:
    layout = Layout(townhall_bin=args.townhall_bin, nats_bin=args.nats_bin)
    try:
        written = write_tree(Path(args.out), Path(args.hosts).read_text(), layout)
    except (OSError, ValueError) as exc:
        print(f"townhall deploy: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f"secrets kept in {Path(args.out) / SECRETS_FILE} (0600): keep it to regenerate "
          "with the same passwords", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """Add ``townhall deploy`` to the subcommands ``sub``."""
    p = sub.add_parser("deploy", help="nats-server configs and systemd units for your hosts")
    p.add_argument("--hosts", required=True, help="JSON list of hosts (docs/operations.md)")
    p.add_argument("--out", default="./townhall-deploy", help="where to write the trees")
    p.add_argument("--townhall-bin", default=Layout.townhall_bin)
    p.add_argument("--nats-bin", default=Layout.nats_bin)
    p.set_defaults(func=_run)
