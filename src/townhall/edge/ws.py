"""``GET /ws/{space}``: the listener WebSocket (hello, state, chunks, jumps, levels)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import FastAPI, WebSocket
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from townhall.edge import direct
from townhall.edge.admission import TokenBucket
from townhall.edge.hub import Subscriber
from townhall.edge.node import (
    CLOSE_BAD_INPUT,
    CLOSE_FULL,
    EdgeNode,
    may_listen,
    parse_from,
    token_identity,
)
from townhall.problems import PROBLEM_CONTENT_TYPE, BadInput
from townhall.room.snapshot import REACTIONS

log = logging.getLogger(__name__)

MAX_CLIENT_TEXT = 1024       # bytes; anything larger closes that listener
CLIENT_RATE = 5.0            # client messages per second, bursting to CLIENT_BURST
CLIENT_BURST = 20.0
CLOSE_TIMEOUT_S = 2.0


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    await ws.accept()
    await ws.close(code, reason)


async def _read_client(ws: WebSocket, sub: Subscriber, edge: EdgeNode, space: str) -> None:
    """Count reactions and answer pings; oversized or flooding messages close this client."""
    bucket = TokenBucket(CLIENT_RATE, CLIENT_BURST, time.monotonic())
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        if text is None or len(text.encode()) > MAX_CLIENT_TEXT:
            sub.end(1009, "client messages are text of at most 1 KiB")
            return
        if not bucket.take(time.monotonic()):
            sub.end(1008, "too many client messages")
            return
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if body.get("type") == "react" and body.get("emoji") in REACTIONS:
            feed = edge.hub.feeds.get(space)
            if feed is not None:
                feed.reactions[str(body["emoji"])] += 1
        elif body.get("type") == "ping":
            sub.push_text('{"type": "pong"}')


async def _write(ws: WebSocket, sub: Subscriber) -> None:
    """Send queued text frames and chunks in order until the subscriber is closed."""
    while sub.close is None:
        await sub.wait()
        sub.busy = True  # no direct write may overtake what this task is sending
        try:
            while sub.texts:
                await ws.send_text(sub.texts.popleft())
            skip = sub.skip()
            if skip is not None:
                await ws.send_text(json.dumps({"type": "jump", "from": skip.from_seq,
                                               "to": skip.to_seq, "reason": "slow"}))
            frame = sub.next_frame()
            if frame is not None:
                await ws.send_bytes(frame.ws)
        finally:
            sub.busy = False


def install(app: FastAPI, edge: EdgeNode) -> None:
    """Add the listener WebSocket route."""

    @app.websocket("/ws/{space}")
    async def listen_ws(ws: WebSocket, space: str) -> None:
        try:
            from_seq = parse_from(ws.query_params.get("from"))
        except ValueError as exc:
            problem = BadInput(str(exc), slug="bad-from")
            try:
                await ws.send_denial_response(JSONResponse(
                    problem.to_dict(), status_code=400, media_type=PROBLEM_CONTENT_TYPE))
            except RuntimeError:  # server without the denial-response extension
                await _refuse(ws, CLOSE_BAD_INPUT, "bad from")
            return
        snap = await edge.hub.snapshot(space)
        refusal = may_listen(snap, space, ws.query_params.get("token"), edge.issuer)
        if refusal is not None:
            await _refuse(ws, refusal.code, refusal.detail)
            return
        decision = edge.admit()
        if not decision.admitted:
            await _refuse(ws, CLOSE_FULL, json.dumps({"retry_after": decision.retry_after}))
            return
        sub = Subscriber("ws", identity=token_identity(ws.query_params.get("token"),
                                                        edge.issuer))
        try:
            await ws.accept()
            joined = await edge.hub.join(space, sub, from_seq, snap)
        finally:
            edge.joined()
        tasks: list[asyncio.Task[None]] = []
        try:
            await ws.send_text(json.dumps({"type": "hello", "space": space,
                                           "live_seq": joined.live_seq, "from": joined.start,
                                           "resumed": joined.resumed}))
            # The handshake is done and hello is out: live chunks may now skip the ASGI
            # path (only while nothing is queued; see Subscriber.push_frame).
            if direct.enabled():
                sub.direct = direct.DirectWriter.for_websocket(ws._send)
            closing = asyncio.ensure_future(sub.closed.wait())
            tasks = [asyncio.ensure_future(_write(ws, sub)),
                     asyncio.ensure_future(_read_client(ws, sub, edge, space))]
            await asyncio.wait([closing, *tasks], return_when=asyncio.FIRST_COMPLETED)
            sub.direct = None  # closing: from here on only the close path writes
            closing.cancel()
            for task in tasks:
                task.cancel()
            if sub.close is not None:
                code, reason = sub.close
                with contextlib.suppress(Exception):
                    while sub.texts:  # e.g. the final "ended" state
                        await asyncio.wait_for(ws.send_text(sub.texts.popleft()),
                                               CLOSE_TIMEOUT_S)
                    await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT_S)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sub.direct = None
            for task in tasks:
                task.cancel()
            edge.hub.leave(space, sub)
