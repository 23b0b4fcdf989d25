"""The browser player's chunk parser agrees with media.chunk: the same bytes, read by
player.js under Node, give the same seq, pts, sent time and Opus packets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from townhall.media.chunk import Chunk

PLAYER = Path(__file__).resolve().parents[2] / "src/townhall/web/static/player.js"
NODE = shutil.which("node")

# `make test` installs Debian's nodejs when it is missing (scripts/system-deps.sh), so a
# missing node is a broken setup: in CI it fails; elsewhere it skips, saying why.
pytestmark = pytest.mark.skipif(NODE is None and not os.environ.get("CI"),
                                reason="needs node to run player.js (make test installs it)")


@pytest.fixture(autouse=True)
def _node_present() -> None:
    if NODE is None:
        pytest.fail("node is missing: `make test` installs Debian's nodejs (system-deps)")

SCRIPT = """
import { parseChunk, backoffMs } from %s;
const hex = process.argv[1];
const bytes = Uint8Array.from(hex.match(/../g).map((h) => parseInt(h, 16)));
const c = parseChunk(bytes.buffer);
const bad = parseChunk(new Uint8Array([1, 2, 3]).buffer);
const delays = Array.from({ length: 200 }, (_, i) => backoffMs(i %% 8, 500, 10000));
console.log(JSON.stringify({
  seq: c.seq, pts: c.pts, sentUs: c.sentUs,
  packets: c.packets.map((p) => Array.from(p)), bad,
  maxDelay: Math.max(...delays), minDelay: Math.min(...delays),
}));
"""


def run_player(data: bytes) -> dict[str, object]:
    assert NODE is not None
    out = subprocess.run(
        [NODE, "--experimental-default-type=module", "--input-type=module",
         "-e", SCRIPT % json.dumps(PLAYER.as_uri()), data.hex()],
        capture_output=True, text=True, timeout=30, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_player_reads_chunks_as_media_chunk_writes_them() -> None:
    packets = (b"\xfc" + bytes(range(40)), b"", bytes(300))
    chunk = Chunk(seq=2**40 + 7, pts=960 * 123_456, sent_us=1_795_576_043_123_456,
                  packets=packets)
    got = run_player(chunk.encode())
    assert got["seq"] == chunk.seq
    assert got["pts"] == chunk.pts
    assert got["sentUs"] == chunk.sent_us
    assert got["packets"] == [list(p) for p in packets]
    assert got["bad"] is None


def test_player_backoff_is_full_jitter_under_the_cap() -> None:
    got = run_player(Chunk(seq=1, pts=0, sent_us=0, packets=(b"x",)).encode())
    assert 0 <= float(str(got["minDelay"])) < float(str(got["maxDelay"])) <= 10_000


EDGES_SCRIPT = """
import { edgeSocketUrl, EdgeChoice } from %s;
const page = "https://live.example.org/s/abc";
const urls = [
  edgeSocketUrl("/ws/abc", page, null, null),
  edgeSocketUrl("http://10.0.0.7:8081/ws/abc", page, 42, "t.k"),
  edgeSocketUrl("https://edge-2.example.org/ws/abc", "http://127.0.0.1:8080/", 0, null),
];
const c = new EdgeChoice("abc");
const walk = [c.current.ws];
c.set([]);                                        // nothing usable: keep same origin
walk.push(c.current.ws);
c.set([{ ws: "http://a/ws/abc", ogg: "http://a/listen/abc.opus" },
       { ws: "http://b/ws/abc", ogg: "http://b/listen/abc.opus" }, { ws: "" }]);
const wraps = [];
for (let i = 0; i < 4; i++) { walk.push(c.current.ws); wraps.push(c.next()); }
console.log(JSON.stringify({ urls, walk, wraps, edges: c.edges.length }));
"""


def test_player_walks_the_apis_edge_list() -> None:
    assert NODE is not None
    out = subprocess.run(
        [NODE, "--experimental-default-type=module", "--input-type=module",
         "-e", EDGES_SCRIPT % json.dumps(PLAYER.as_uri())],
        capture_output=True, text=True, timeout=30, check=True)
    got = json.loads(out.stdout)
    assert got["urls"] == ["wss://live.example.org/ws/abc",
                           "ws://10.0.0.7:8081/ws/abc?from=42&token=t.k",
                           "wss://edge-2.example.org/ws/abc?from=0"]
    assert got["walk"] == ["/ws/abc", "/ws/abc", "http://a/ws/abc", "http://b/ws/abc",
                           "http://a/ws/abc", "http://b/ws/abc"]
    assert got["wraps"] == [False, True, False, True] and got["edges"] == 2
