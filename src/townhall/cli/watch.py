"""``townhall watch``: follow a Space's room state on its listener WebSocket, one line per
snapshot (audio chunks are only counted), until the Space ends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from townhall.closecode import CloseCode
from townhall.room.snapshot import Space, from_doc


def describe(snap: Space) -> str:
    """One line saying what a snapshot shows: version, state, stage, queue, audience."""
    stage = ", ".join(f"{p.name} ({p.role}{', muted' if p.muted else ''})"
                      for p in snap.stage)
    asking = ", ".join(r.name for r in snap.requests) or "nobody"
    reactions = " ".join(f"{e} {n}" for e, n in snap.reactions.items()) or "none"
    return (f"v{snap.version} {snap.state} | stage: {stage or 'empty'} | "
            f"asking to speak: {asking} | listeners: {snap.listeners} | "
            f"reactions: {reactions}")


def ws_address(base: str, space: str, token: str | None) -> str:
    """The listener WebSocket of ``space`` on the server at ``base`` (http or https)."""
    root = base.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{root}/ws/{quote(space)}" + (f"?token={quote(token)}" if token else "")


async def watch(url: str, space: str, token: str | None, seconds: float | None) -> int:
    """Print snapshots as they come; 0 when the Space ends or time is up."""
    deadline = time.monotonic() + seconds if seconds else None
    chunks = 0
    async with connect(ws_address(url, space, token), open_timeout=10) as ws:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return 0
            try:
                frame = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                return 0
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                print(f"closed ({code}: {closed.rcvd.reason if closed.rcvd else ''}); "
                      f"{chunks} audio chunks heard", flush=True)
                return 0 if code == CloseCode.ENDED else 1
            if isinstance(frame, bytes):
                chunks += 1
                continue
            msg = json.loads(frame)
            if msg.get("type") == "state":
                print(describe(from_doc(msg["snapshot"])), flush=True)


def _run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(watch(args.url, args.space, args.token, args.seconds))
        except (OSError, TimeoutError) as exc:
            print(f"townhall watch: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a refused handshake (404, 503...) and the like
            print(f"townhall watch: {exc}", file=sys.stderr)
            return 1
    return 0


def add_parser(sub: Any) -> None:
    """Add ``townhall watch`` to the subcommands ``sub``."""
    p = sub.add_parser("watch", help="follow a Space's room state live, one line per change")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="a server with the edge role")
    p.add_argument("--space", required=True)
    p.add_argument("--token", default=None, help="needed for private Spaces")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: until the Space ends)")
    p.set_defaults(func=_run)
