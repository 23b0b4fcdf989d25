"""The edge against a real `townhall serve` (api + edge roles) and a real chunk producer.

The producer is this test: a 440 Hz tone encoded with libopus (PyAV) into Chunks,
published on ``townhall.<id>.media`` through the bus like the stage does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Served, running, start_townhall
from tests.edges import Listener, Producer, contiguous, live_space, metric, ws_base
from tests.waiting import until_async
from townhall.bus import Bus, NatsBus, subjects
from townhall.media.chunk import Chunk


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await NatsBus.connect([nats_url])
    yield b
    await b.close()


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Any:
    served = start_townhall(tmp_path_factory.mktemp("edge"), "--nats", nats_url,
                            "--roles", "api,edge")
    yield served
    served.stop()


async def close_code(url: str) -> int | None:
    """The close code a WebSocket join gets (after at most a few frames)."""
    async with connect(url, open_timeout=30) as ws:
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


async def ogg_page_numbers(url: str, until_page: int, started: asyncio.Event,
                           timeout: float = 90) -> list[int]:
    """Read an Ogg stream, returning its page numbers, until ``until_page`` arrived."""
    pages: list[int] = []
    buf = b""
    async with httpx.AsyncClient(timeout=30) as http, asyncio.timeout(timeout):
        async with http.stream("GET", url) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "audio/ogg"
            started.set()
            async for data in r.aiter_raw():
                buf += data
                while len(buf) >= 27 and len(buf) >= 27 + buf[26]:
                    assert buf[:4] == b"OggS"
                    size = 27 + buf[26] + sum(buf[27:27 + buf[26]])
                    if len(buf) < size:
                        break
                    pages.append(int.from_bytes(buf[18:22], "little"))
                    buf = buf[size:]
                if pages and pages[-1] >= until_page:
                    return pages
    return pages


async def test_state_first_then_200_ws_and_50_ogg_listeners_get_every_chunk(
        edge_server: Served, bus: Bus) -> None:
    space, _ = live_space(edge_server)
    producer = Producer(bus, space)
    producer.start()
    try:
        listeners = await asyncio.gather(*[
            Listener.open(f"{ws_base(edge_server)}/ws/{space}") for _ in range(200)])
        oggs_started = [asyncio.Event() for _ in range(50)]
        ogg_target = producer.last + 30
        oggs = [asyncio.ensure_future(ogg_page_numbers(
            f"{edge_server.url}/listen/{space}.opus", ogg_target + 2, ev))
            for ev in oggs_started]
        first = listeners[0]
        assert first.hello["space"] == space and first.hello["resumed"] is False
        async with asyncio.timeout(30):  # all 50 Ogg streams answered
            await asyncio.gather(*[ev.wait() for ev in oggs_started])
        target = producer.last + 20
        await asyncio.gather(*[lis.until(target) for lis in listeners])
        for lis in listeners:
            assert lis.texts and lis.texts[0]["type"] == "state"
            assert lis.texts[0]["snapshot"]["id"] == space
            assert lis.texts[0]["snapshot"]["state"] == "live"
            assert not any(k.startswith("_") for k in lis.texts[0]["snapshot"])
            assert contiguous(lis.seqs), lis.seqs
            assert lis.seqs[-1] >= target
        for pages in await asyncio.gather(*oggs):
            assert pages[:2] == [0, 1]  # the header pages first
            assert contiguous(pages[2:]) and pages[-1] >= ogg_target + 2
        # Resume: leave after a chunk, come back with from=next; nothing is lost.
        lis = listeners[0]
        gone_after = lis.seqs[-1]
        await asyncio.gather(*[x.ws.close() for x in listeners])
        await until_async(lambda: producer.last >= gone_after + 10, 10,
                          "ten chunks published while the listener is away")
        back = await Listener.open(f"{ws_base(edge_server)}/ws/{space}?from={gone_after + 1}")
        assert back.hello["resumed"] is True and back.hello["from"] == gone_after + 1
        await back.until(producer.last + 5)
        assert back.seqs[0] == gone_after + 1 and contiguous(back.seqs)
        await back.ws.close()
    finally:
        await producer.stop()


async def test_resume_older_than_the_ring_replays_from_jetstream(edge_server: Served,
                                                                 bus: Bus) -> None:
    space, _ = live_space(edge_server)
    producer = Producer(bus, space)
    watcher = await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
    await producer.publish(150, gap=0.01)  # more than the ring's 100 chunks, fast
    await watcher.until(150)
    back = await Listener.open(f"{ws_base(edge_server)}/ws/{space}?from=3")
    assert back.hello["resumed"] is True and back.hello["from"] == 3
    await back.until(150)
    assert back.seqs[0] == 3 and contiguous(back.seqs) and back.seqs[-1] == 150
    # A sequence nobody holds any more (or not yet): told to jump to live.
    ahead = await Listener.open(f"{ws_base(edge_server)}/ws/{space}?from=100000")
    assert ahead.hello["resumed"] is False
    await producer.publish(1)
    await ahead.until(151)
    assert any(t["type"] == "jump" and t["from"] == 100000 for t in ahead.texts)
    for x in (watcher, back, ahead):
        await x.ws.close()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")
async def test_ffmpeg_records_the_ogg_stream_as_a_440_hz_tone(edge_server: Served, bus: Bus,
                                                              tmp_path: Path) -> None:
    space, _ = live_space(edge_server)
    producer = Producer(bus, space)
    producer.start()
    wav = tmp_path / "listen.wav"
    try:
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-y", "-i", f"{edge_server.url}/listen/{space}.opus",
            "-t", "3", "-ac", "1", "-ar", "48000", str(wav),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    finally:
        await producer.stop()
    pcm = np.frombuffer(wav.read_bytes()[44:], dtype=np.int16).astype(np.float64)
    assert len(pcm) > 48_000 * 2
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = float(np.fft.rfftfreq(len(pcm), 1 / 48_000)[int(np.argmax(spectrum))])
    assert abs(peak - 440) < 5


def deliveries(kind: str, path: str) -> str:
    return f'townhall_edge_chunk_deliveries_total{{kind="{kind}",path="{path}"}}'


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")
async def test_listeners_keeping_up_get_live_chunks_by_direct_writes_in_order(
        edge_server: Served, bus: Bus, tmp_path: Path) -> None:
    space, _ = live_space(edge_server)
    before = {(k, p): await metric(edge_server, deliveries(k, p))
              for k in ("ws", "ogg") for p in ("direct", "queued")}
    producer = Producer(bus, space)
    producer.start()
    wav = tmp_path / "direct.wav"
    try:
        lis = await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
        started = asyncio.Event()
        target = producer.last + 40
        pages = asyncio.ensure_future(ogg_page_numbers(
            f"{edge_server.url}/listen/{space}.opus", target + 2, started))
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-y", "-i", f"{edge_server.url}/listen/{space}.opus",
            "-t", "3", "-ac", "1", "-ar", "48000", str(wav),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and not err.strip(), err.decode()
        await lis.until(target)
        ogg_pages = await pages
        await lis.ws.close()
    finally:
        await producer.stop()
    after = {key: await metric(edge_server, deliveries(*key)) for key in before}
    delta = {key: after[key] - before[key] for key in before}
    # Every chunk arrived, in order, and most of them by one transport.write (the first
    # few may queue behind the hello and state frames).
    assert contiguous(lis.seqs) and lis.seqs[-1] >= target
    assert ogg_pages[:2] == [0, 1] and contiguous(ogg_pages[2:])
    assert delta["ws", "direct"] >= len(lis.seqs) // 2, delta
    assert delta["ogg", "direct"] >= (len(ogg_pages) - 2) // 2, delta
    pcm = np.frombuffer(wav.read_bytes()[44:], dtype=np.int16).astype(np.float64)
    assert len(pcm) > 48_000 * 2  # ffmpeg parsed the chunked body and the pages in it


async def test_bad_input_unknown_space_and_malformed_from(edge_server: Served) -> None:
    base = ws_base(edge_server)
    assert await close_code(f"{base}/ws/zzzzzzzzzz") == 4404
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{edge_server.url}/listen/zzzzzzzzzz.opus")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    space, _ = live_space(edge_server)
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{base}/ws/{space}?from=abc", open_timeout=30)
    assert info.value.response.status_code == 400


async def test_private_space_needs_a_token(edge_server: Served) -> None:
    space, host_token = live_space(edge_server, private=True)
    base = ws_base(edge_server)
    # To anyone it is not for, a private Space is no Space (existence does not leak).
    assert await close_code(f"{base}/ws/{space}") == 4404
    assert await close_code(f"{base}/ws/{space}?token=nonsense") == 4404
    lis = await Listener.open(f"{base}/ws/{space}?token={host_token}")
    await lis.ws.close()


async def test_flooding_listener_is_closed_alone(edge_server: Served, bus: Bus) -> None:
    space, _ = live_space(edge_server)
    producer = Producer(bus, space)
    producer.start()
    try:
        calm = await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
        noisy = await connect(f"{ws_base(edge_server)}/ws/{space}", open_timeout=30)
        await noisy.send("x" * 5000)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await noisy.recv()
        assert noisy.close_code in (1008, 1009)
        target = producer.last + 10
        await calm.until(target)
        assert contiguous(calm.seqs)
        await calm.ws.send(json.dumps({"type": "react", "emoji": "👏"}))
        await calm.ws.close()
    finally:
        await producer.stop()


async def test_a_listener_that_stops_reading_is_skipped_then_closed_alone(
        edge_server: Served, bus: Bus) -> None:
    space, _ = live_space(edge_server)
    skips0 = await metric(edge_server, "townhall_edge_skips_total")
    closes0 = await metric(edge_server, "townhall_edge_slow_closes_total")
    host, port = edge_server.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall((f"GET /ws/{space} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    calm = await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
    # Big chunks (the edge never parses the Opus inside) fill the stalled socket's
    # buffers within seconds; the calm listener must still get every one.
    seq = 0
    try:
        async with asyncio.timeout(90):
            while (await metric(edge_server, "townhall_edge_slow_closes_total")) <= closes0:
                for _ in range(25):
                    seq += 1
                    chunk = Chunk(seq=seq, pts=seq * 4800, sent_us=0,
                                  packets=tuple(bytes([seq % 251]) * 4000 for _ in range(5)))
                    await bus.publish(subjects.media(space), chunk.encode())
                    await asyncio.sleep(0.01)
                await calm.until(seq)
        assert await metric(edge_server, "townhall_edge_skips_total") > skips0
        assert contiguous(calm.seqs) and calm.seqs[-1] == seq
    finally:
        stalled.close()
        await calm.ws.close()


async def test_over_the_cap_joins_get_503_and_4503(tmp_path: Path, nats_url: str,
                                                   bus: Bus) -> None:
    with running(tmp_path, "--nats", nats_url, "--roles", "api,edge",
                 env={"TOWNHALL_EDGE_CAPACITY": "3"}) as served:
        space, _ = live_space(served)
        producer = Producer(bus, space)
        producer.start()
        admitted = [await Listener.open(f"{ws_base(served)}/ws/{space}") for _ in range(3)]
        async with connect(f"{ws_base(served)}/ws/{space}", open_timeout=30) as ws:
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
        assert ws.close_code == 4503
        assert ws.close_reason and json.loads(ws.close_reason)["retry_after"] >= 1
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{served.url}/listen/{space}.opus")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        target = producer.last + 10
        await asyncio.gather(*[a.until(target) for a in admitted])
        assert all(contiguous(a.seqs) for a in admitted)
        await producer.stop()
        for a in admitted:
            await a.ws.close()


async def test_a_burst_of_joins_never_overshoots_the_cap(tmp_path: Path, nats_url: str,
                                                          bus: Bus) -> None:
    """40 joins at once against a cap of 5: admissions awaiting their handshake count too."""
    with running(tmp_path, "--nats", nats_url, "--roles", "api,edge",
                 env={"TOWNHALL_EDGE_CAPACITY": "5",
                      "TOWNHALL_EDGE_JOIN_RATE": "1000"}) as served:
        space, _ = live_space(served)
        producer = Producer(bus, space)
        producer.start()
        url = f"{ws_base(served)}/ws/{space}"
        held: list[ClientConnection] = []

        async def join() -> str:
            ws = await connect(url, open_timeout=30)
            try:
                async with asyncio.timeout(30):
                    while True:
                        if isinstance(await ws.recv(), bytes):  # a chunk: admitted
                            held.append(ws)
                            return "admitted"
            except ConnectionClosed:
                return f"closed {ws.close_code}"

        outcomes = await asyncio.gather(*[join() for _ in range(40)])
        assert outcomes.count("admitted") == 5, outcomes
        assert outcomes.count("closed 4503") == 35, outcomes
        await producer.stop()
        for ws in held:
            await ws.close()


async def test_townhall_listen_records_a_440_hz_wav(edge_server: Served, bus: Bus,
                                                    tmp_path: Path) -> None:
    space, _ = live_space(edge_server)
    producer = Producer(bus, space)
    producer.start()
    out = tmp_path / "heard.wav"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "townhall", "listen", "--url", edge_server.url,
            "--space", space, "--seconds", "3", "--out", str(out),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text, _ = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, text.decode()
    finally:
        await producer.stop()
    report = text.decode()
    assert "gaps: 0 chunks missing" in report and "delay behind live" in report, report
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels()) == (48_000, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    assert len(pcm) > 48_000 * 2
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = float(np.fft.rfftfreq(len(pcm), 1 / 48_000)[int(np.argmax(spectrum))])
    assert abs(peak - 440) < 5


async def test_counts_and_reactions_reach_the_snapshot_and_end_closes_4410(
        edge_server: Served, bus: Bus) -> None:
    space, host = live_space(edge_server)
    producer = Producer(bus, space)
    producer.start()
    headers = {"Authorization": f"Bearer {host}"}
    try:
        listeners = [await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
                     for _ in range(5)]
        for lis in listeners[:3]:
            await lis.ws.send(json.dumps({"type": "react", "emoji": "👏"}))
        async with httpx.AsyncClient(base_url=edge_server.url, timeout=10,
                                     headers=headers) as http:
            async def counted() -> bool:
                snap = (await http.get(f"/api/v1/spaces/{space}")).json()
                return bool(snap.get("listeners") == 5
                            and snap.get("reactions", {}).get("👏", 0) >= 3)

            await until_async(counted, 30, "5 listeners and 3 👏 in the snapshot",
                              every_s=0.3)
            where = (await http.get(f"/api/v1/spaces/{space}/listen")).json()
            assert where["edges"] and where["edges"][0]["ws"].endswith(f"/ws/{space}")
            r = await http.post(f"/api/v1/spaces/{space}/end")
            assert r.status_code == 200, r.text
        for lis in listeners:
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(30):
                    while True:
                        msg = await lis.ws.recv()
                        if isinstance(msg, str):
                            lis.texts.append(json.loads(msg))
            assert lis.ws.close_code == 4410
            assert lis.texts[-1]["type"] == "state"
            assert lis.texts[-1]["snapshot"]["state"] == "ended"
        assert await close_code(f"{ws_base(edge_server)}/ws/{space}") == 4410
    finally:
        await producer.stop()


async def test_removing_a_listener_closes_their_socket_and_blocks_rejoin(
        edge_server: Served) -> None:
    space, host = live_space(edge_server)
    guest = edge_server.session("guest")
    async with httpx.AsyncClient(base_url=edge_server.url, timeout=10) as http:
        me = (await http.get("/api/v1/me", headers={"Authorization": f"Bearer {guest}"})).json()
        bystander = await Listener.open(f"{ws_base(edge_server)}/ws/{space}")
        kicked = await Listener.open(f"{ws_base(edge_server)}/ws/{space}?token={guest}")
        r = await http.post(f"/api/v1/spaces/{space}/actions",
                            headers={"Authorization": f"Bearer {host}"},
                            json={"action": "remove", "identity": me["identity"], "block": True})
        assert r.status_code == 200, r.text
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                await kicked.ws.recv()
    assert kicked.ws.close_code == 4403
    assert await close_code(f"{ws_base(edge_server)}/ws/{space}?token={guest}") == 4403
    await bystander.ws.send(json.dumps({"type": "ping"}))
    async with asyncio.timeout(30):
        while not any(t.get("type") == "pong" for t in bystander.texts):
            bystander.texts.append(json.loads(await bystander.ws.recv()))
    await bystander.ws.close()


async def test_sigterm_closes_listeners_with_1001_and_ends_the_ogg_stream(
        tmp_path: Path, nats_url: str, bus: Bus) -> None:
    """Listener connections are raw protocols now: uvicorn's graceful shutdown must still
    reach them (WebSocket close 1001, the chunked Ogg body's last chunk), quickly."""
    served = start_townhall(tmp_path, "--nats", nats_url, "--roles", "api,edge")
    producer: Producer | None = None
    try:
        space, _ = live_space(served)
        producer = Producer(bus, space)
        producer.start()
        lis = await Listener.open(f"{ws_base(served)}/ws/{space}")
        await lis.until(producer.last + 2)
        ended, flowing = asyncio.Event(), asyncio.Event()
        body = bytearray()

        async def ogg() -> None:
            async with httpx.AsyncClient(timeout=30) as http, http.stream(
                    "GET", f"{served.url}/listen/{space}.opus") as r:
                assert r.status_code == 200
                async for piece in r.aiter_bytes():  # ends cleanly only on the last chunk
                    body.extend(piece)
                    if len(body) >= 4096:
                        flowing.set()
                ended.set()

        reading = asyncio.ensure_future(ogg())
        async with asyncio.timeout(30):
            await flowing.wait()
        started = asyncio.get_running_loop().time()
        stopping = asyncio.ensure_future(asyncio.to_thread(served.stop))
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await lis.ws.recv()
        assert lis.ws.close_code == 1001
        async with asyncio.timeout(30):
            await ended.wait()
        await reading
        assert body.startswith(b"OggS")
        assert asyncio.get_running_loop().time() - started < 10
        assert await stopping == 0
    finally:
        if producer is not None:
            await producer.stop()
        served.stop()
