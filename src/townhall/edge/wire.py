"""Bytes on a listener's socket, built once per edge and shared: WebSocket frames, HTTP
chunked-body pieces and the few HTTP responses the raw listener connections write."""

from __future__ import annotations

import http
import json
import struct
from collections.abc import Mapping

from townhall.problems import PROBLEM_CONTENT_TYPE, Problem


def ws_binary_frame(payload: bytes) -> bytes:
    """One unmasked, final, binary WebSocket frame (RFC 6455 §5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    return head + payload


def ws_text_frame(text: str) -> bytes:
    """One unmasked, final, text WebSocket frame (RFC 6455 §5.2) around ``text``."""
    frame = bytearray(ws_binary_frame(text.encode()))
    frame[0] = 0x81
    return bytes(frame)


def http_chunk(data: bytes) -> bytes:
    """One piece of an HTTP/1.1 chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


CHUNKED_END = b"0\r\n\r\n"


def http_head(status: int, headers: Mapping[str, str], version: str = "1.1") -> bytes:
    """A response's status line and header block."""
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/{version} {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def problem_response(problem: Problem, version: str = "1.1") -> bytes:
    """A whole problem+json response (RFC 9457) that ends the connection."""
    body = json.dumps(problem.to_dict()).encode()
    headers = {"content-type": PROBLEM_CONTENT_TYPE, "content-length": str(len(body)),
               "connection": "close", **problem.headers()}
    return http_head(problem.status, headers, version) + body
