"""Recording and HLS: what packaging costs per Space-hour, and how many HLS requests an api
process answers per CPU-second, with Debian's nginx serving the same files from disk in the
same run as the reference.

Packaging: one hour of program chunks (a minute of a 440 Hz tone encoded once with
libopus, repeated with fresh sequence numbers and timestamps) through the recorder's
segment writer, the replay-file builder and the fMP4 packager of every 2 s HLS segment;
and the AAC rendition (Opus decode + AAC-LC encode + fMP4), measured on 10 minutes and
scaled to the hour (it is linear: one encoder, fed in order).

HLS origin: a `townhall serve` with a recorded Space (some seconds of program audio, then
the end); the VOD playlist (`opus.m3u8`) and its segments are fetched once and written to
a directory that nginx (1 worker) serves. A small keep-alive HTTP/1.1 load generator (asyncio, 16
connections) then asks each server for segments, then for the playlist, for a few seconds
each; the server's CPU time comes from /proc, so the figure is requests per CPU-second
of the server (per core), not limited by the load generator.

    .venv/bin/python -m bench replay          (writes its table into bench/README.md)
    .venv/bin/python -m bench.replay.run      (prints only)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench._local import start_server
from townhall.bus.embedded import free_port
from townhall.media.chunk import Chunk
from townhall.media.fmp4 import media_segment
from townhall.media.hls import SEGMENT_SAMPLES, segment_of
from townhall.media.recording import SegmentWriter, decode_segment, replay_file
from townhall.procs import stop_process
from townhall.recording.aacpackager import transcode_recording, vod_segments

HOUR_CHUNKS = 36_000
AAC_SAMPLE_CHUNKS = 6_000  # 10 minutes of the hour, AAC-encoded, times 6


def hour_of_chunks() -> list[Chunk]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.tone import ToneChunks  # a real libopus tone, as the tests use

    minute = list(islice(ToneChunks(440, first_seq=0), 600))
    out = []
    for i in range(HOUR_CHUNKS):
        c = minute[i % 600]
        out.append(Chunk(seq=i, pts=i * 4800, sent_us=c.sent_us, packets=c.packets))
    return out


def package_hour(chunks: list[Chunk]) -> dict[str, float]:
    """CPU seconds of each packaging step for one Space-hour."""
    t = time.process_time()
    writer = SegmentWriter()
    stored = [done[1] for c in chunks if (done := writer.add(c)) is not None]
    last = writer.flush()
    if last is not None:
        stored.append(last[1])
    segments_s = time.process_time() - t
    t = time.process_time()
    back = [c for data in stored for c in decode_segment(data)]
    built = replay_file(back)
    replay_s = time.process_time() - t
    t = time.process_time()
    by_segment: dict[int, list[bytes]] = {}
    for c in chunks:
        for i, p in enumerate(c.packets):
            by_segment.setdefault(segment_of(c.pts + i * 960), []).append(p)
    hls_bytes = sum(len(media_segment(ps, sequence=k + 1, decode_time=k * SEGMENT_SAMPLES))
                    for k, ps in by_segment.items())
    hls_s = time.process_time() - t
    t = time.process_time()
    frames = transcode_recording(chunks[:AAC_SAMPLE_CHUNKS])
    aac_bytes = sum(len(media_segment(packed, sequence=k + 1, decode_time=stamp,
                                      sample_duration=1024))
                    for k, (stamp, packed) in vod_segments(frames).items())
    scale = len(chunks) / AAC_SAMPLE_CHUNKS
    aac_s = (time.process_time() - t) * scale
    return {"segments": segments_s, "replay": replay_s, "hls": hls_s, "aac": aac_s,
            "replay_mb": len(built.data) / 1e6, "hls_mb": hls_bytes / 1e6,
            "aac_mb": aac_bytes * scale / 1e6}


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


async def hammer(port: int, paths: list[str], seconds: float, conns: int = 16) -> int:
    """Keep-alive GETs of ``paths`` in turn on ``conns`` connections; returns answers."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def one(n: int) -> None:
        nonlocal done
        i = n
        while time.monotonic() < stop_at:
            # A server may close a keep-alive connection (nginx after 1000 requests): reopen.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while time.monotonic() < stop_at:
                    path = paths[i % len(paths)]
                    i += 1
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head[:80]
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    await reader.readexactly(length)
                    done += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

    await asyncio.gather(*(one(n) for n in range(conns)))
    return done


def rate(port: int, pids: list[int], paths: list[str], seconds: float) -> tuple[float, float]:
    """(requests per wall second, requests per server CPU-second)."""
    cpu0, t0 = cpu_of(pids), time.monotonic()
    n = asyncio.run(hammer(port, paths, seconds))
    cpu, wall = cpu_of(pids) - cpu0, time.monotonic() - t0
    return n / wall, n / max(cpu, 1e-6)


def recorded_space(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as c:
        token = c.post("/api/v1/sessions", json={"name": "bench"}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        space = c.post("/api/v1/spaces", json={"title": "bench", "record": True},
                       headers=h).json()["id"]
        c.post(f"/api/v1/spaces/{space}/start", headers=h).raise_for_status()
        time.sleep(8)  # program audio (silence) to record: the content does not matter here
        c.post(f"/api/v1/spaces/{space}/end", headers=h).raise_for_status()
        deadline = time.monotonic() + 60
        while not isinstance(c.get(f"/api/v1/spaces/{space}").json()["recording"], dict):
            if time.monotonic() > deadline:
                raise RuntimeError("the recording did not become ready")
            time.sleep(0.3)
    return str(space)


NGINX_CONF = """worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp4 mp4 m4s; }}
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
    location /hls/ {{ add_header Cache-Control "public, max-age=31536000, immutable"; }}
  }}
}}
"""


def origin_rows(seconds: float) -> list[list[str]]:
    url, proc = start_server()
    root = Path(tempfile.mkdtemp(prefix="townhall-bench-nginx-"))
    root.chmod(0o755)  # nginx's worker reads the files as another user
    nginx = None
    try:
        space = recorded_space(url)
        base = f"/hls/{space}/"
        playlist = httpx.get(f"{url}{base}opus.m3u8", timeout=10).text
        names = ["init.mp4"] + [ln for ln in playlist.splitlines() if ln.endswith(".m4s")]
        www = root / "www" / "hls" / space
        www.mkdir(parents=True)
        (root / "tmp").mkdir()
        (www / "opus.m3u8").write_text(playlist)
        for name in names:
            (www / name).write_bytes(httpx.get(f"{url}{base}{name}", timeout=10).content)
        port = free_port()
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                                  str(root / "nginx.conf"), "-e", str(root / "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}{base}opus.m3u8", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        ngx_pids = [nginx.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(nginx.pid)], capture_output=True, text=True).stdout.split()]
        th_port = int(url.rsplit(":", 1)[1])
        segs = [base + n for n in names[1:]]
        rows = []
        for what, paths in (("segments", segs), ("playlist", [base + "opus.m3u8"])):
            ours = rate(th_port, [proc.pid], paths, seconds)
            ref = rate(port, ngx_pids, paths, seconds)
            rows.append([f"HLS {what} (VOD)", f"{ours[1]:,.0f} req/CPU-s",
                         f"{ref[1]:,.0f} req/CPU-s", f"{ours[1] / ref[1]:.2f}×",
                         f"{ours[0]:,.0f} / {ref[0]:,.0f} req/s"])
        return rows
    finally:
        if nginx is not None:
            stop_process(nginx)
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench replay")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    chunks = hour_of_chunks()
    runs = []
    for i in range(args.runs):
        with console.status(f"packaging a Space-hour, run {i + 1} of {args.runs}"):
            runs.append(package_hour(chunks))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rows = [
        ["segments for the object store", f"{med('segments'):.2f} s", "—", "—",
         f"{36 * 10} segments of 10 s"],
        ["replay file (Ogg/Opus) from the segments", f"{med('replay'):.2f} s", "—", "—",
         f"{med('replay_mb'):.1f} MB"],
        ["HLS fMP4 segments (all 1800)", f"{med('hls'):.2f} s", "—", "—",
         f"{med('hls_mb'):.1f} MB"],
        ["AAC rendition (decode, AAC-LC 64 kbit/s, fMP4)", f"{med('aac'):.1f} s", "—", "—",
         f"{med('aac_mb'):.1f} MB; once per Space, live or after the end"],
    ]
    with console.status("HLS origin vs nginx"):
        rows += origin_rows(args.seconds)
    return {"title": "Recording: packaging per Space-hour, and the HLS origin vs nginx",
            "command": f"python -m bench replay (runs {args.runs}, {args.seconds:g} s per "
                       "load run, 16 keep-alive connections)",
            "columns": ["what", "townhall", "nginx", "vs nginx",
                        "notes (throughput townhall / nginx)"],
            "rows": rows,
            "notes": "Packaging rows: CPU seconds per Space-hour (a libopus tone, ~50 "
                     "kbps), median of the runs, in one process (Opus is never re-encoded; "
                     "the AAC row decodes it and encodes AAC-LC, once per Space: 0.8 % of "
                     "a core while live). Origin rows: "
                     "requests answered per CPU-second of the server process (uvicorn, one "
                     "event loop) vs nginx with one worker serving the same files from disk; "
                     "the load generator shares the machine; the Space's grants come from a "
                     "2 s cache and answers given before are repeated without routing "
                     "(recording/hls.py; the table before, 2,133 req/CPU-s, asked NATS on "
                     "every request). Not measured: live HLS (the same path, "
                     "segments cut from a NATS feed once per node). Machine shared with "
                     "other engineers' work."}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(result["title"])
    for row in result["rows"]:
        print(" | ".join(row))
