"""`townhall speak`: a WHIP client that streams a tone or a WAV file onto a Space's stage,
records its mix-minus return feed, and reconnects on its own when the stage changes.

The source track encodes its own Opus (libopus through PyAV, mono, in-band FEC on) and
hands aiortc ready-made ``av.Packet``s, which aiortc's RTP sender sends as they are (the
pass-through it uses for ``MediaPlayer(decode=False)``): aiortc creates its own encoder
privately, with no way to ask for FEC. The offer asks for generic NACK on Opus: the stage
then asks for lost packets, and aiortc's sender resends them from its history. The send
bitrate follows the stage's receiver reports (``townhall.client.bitrate``): down a step
when a bottleneck loses packets, back up after a clean stretch, in 60 ms packets below
24 kbit/s (the per-packet overhead); the loss its FEC is sized for follows the reported
loss too (10 %, or 5 % on a clean link, from ``--expected-loss``); ``--no-adapt`` keeps
both.
``--simulate-loss`` drops outgoing RTP packets after aiortc numbered them (resends
included), to test the stage's FEC and PLC on a lossy uplink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import random
import re
import signal
import sys
import time
import wave
from collections import deque
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import is_rtcp

from townhall.client.bitrate import BitrateAdapter, FecSizer, packet_ms
from townhall.client.rejoin import RejoinPacer
from townhall.media.chunk import FRAME_SAMPLES, SAMPLE_RATE
from townhall.media.linkquality import LinkGauge, grade
from townhall.media.opus import mono_encoder, mono_frame, packet_samples
from townhall.stage.ingest import to_mono, with_nack
from townhall.stage.rtc import rtc_configuration

SPEAKER_BITRATE = 64_000
LONG_FRAMES = 3  # 20 ms frames in the longest packet we send (client.bitrate.packet_ms)


class SpeakerEncoder:
    """Opus for the uplink: 48 kHz mono, in-band FEC sized for ``expected_loss`` %, 20 ms
    packets (60 ms at the lowest rates: ``client.bitrate.packet_ms``), fed 20 ms frames."""

    def __init__(self, bitrate: int = SPEAKER_BITRATE, expected_loss: int = 10) -> None:
        self.expected_loss = expected_loss
        self.bitrate = bitrate
        self._ctx = self._open(bitrate)
        self._recent: deque[av.AudioFrame] = deque(maxlen=LONG_FRAMES)
        self._pending = 0  # frames fed since the last packet came out

    def _open(self, bitrate: int) -> Any:
        options = {"application": "voip", "frame_duration": str(packet_ms(bitrate))}
        if self.expected_loss > 0:
            # libopus adds LBRR (a low-rate copy of the previous frame) to each packet,
            # so the stage can rebuild a lost frame from the packet after it.
            options |= {"fec": "1", "packet_loss": str(self.expected_loss)}
        return mono_encoder("libopus", "s16", bitrate, options)

    @property
    def between_packets(self) -> bool:
        """No frame waits in the encoder for the rest of its packet: a switch loses none."""
        return self._pending == 0

    def retune(self, bitrate: int, expected_loss: int | None = None) -> None:
        """Encode at ``bitrate`` (and FEC for ``expected_loss`` %, if given) from the next
        frame on (call it between packets). PyAV cannot change an open encoder's rate or
        options, so a new one takes over, first fed the last
        packet's worth of frames (its packet dropped): its lookahead then holds the audio
        the old one's last packet stopped at, and the stage's decoder carries on across
        the switch without a gap."""
        if expected_loss is not None:
            self.expected_loss = expected_loss
        ctx = self._open(bitrate)
        for frame in list(self._recent)[-(packet_ms(bitrate) // 20):]:
            list(ctx.encode(frame))
        self._ctx, self.bitrate = ctx, bitrate

    def encode(self, frame: av.AudioFrame) -> list[av.Packet]:
        """One 20 ms frame → the Opus packet(s) it completes (none while a 60 ms packet,
        or the encoder's lookahead, fills up)."""
        self._recent.append(frame)
        packets = list(self._ctx.encode(frame))
        self._pending = 0 if packets else self._pending + 1
        return packets


class SourceTrack(MediaStreamTrack):
    """Real-time Opus packets (20 ms; 60 ms at the lowest rates) of a tone or a looping
    WAV (48 kHz mono int16)."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray, expected_loss: int = 10,
                 bitrate: int = SPEAKER_BITRATE) -> None:
        super().__init__()
        self.pcm = pcm
        self._pos = 0
        self._pts = 0
        self._start: float | None = None
        self._encoder = SpeakerEncoder(bitrate, expected_loss)
        self._packets: list[av.Packet] = []
        self._sent = 0
        self._want = (bitrate, expected_loss)

    @property
    def setting(self) -> tuple[int, int]:
        """The bitrate and FEC size (% loss) asked for last."""
        return self._want

    def retune(self, bitrate: int, expected_loss: int) -> None:
        """Send at ``bitrate`` with FEC for ``expected_loss`` % from the next packet on."""
        self._want = (bitrate, expected_loss)

    async def recv(self) -> av.Packet:
        """The next encoded 20 ms packet, stamped with its place in the stream."""
        while not self._packets:
            frame = await self._next_frame()
            have = (self._encoder.bitrate, self._encoder.expected_loss)
            if self._want != have and self._encoder.between_packets:
                self._encoder.retune(*self._want)
            self._packets = self._encoder.encode(frame)
        packet = self._packets.pop(0)
        packet.pts = self._sent  # aiortc turns pts/time_base into the RTP timestamp
        packet.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += packet_samples(bytes(packet)) or FRAME_SAMPLES
        return packet

    async def _next_frame(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        idx = (np.arange(FRAME_SAMPLES) + self._pos) % self.pcm.size
        self._pos = (self._pos + FRAME_SAMPLES) % self.pcm.size
        frame = mono_frame(self.pcm[idx], self._pts)
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine tone as 48 kHz mono int16, ``seconds`` long (looped by the source track)."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def read_wav(path: Path) -> np.ndarray:
    """A WAV as 48 kHz mono int16 (resampled by PyAV when it is not)."""
    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for res in resampler.resample(frame):
                out.append(res.to_ndarray().reshape(-1))
    if not out:
        raise ValueError(f"{path} has no audio")
    return np.concatenate(out).astype(np.int16)


class ReturnRecorder:
    """Collects the return feed's samples."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.last_at = time.monotonic()

    async def consume(self, track: MediaStreamTrack) -> None:
        """Keep every frame of ``track`` (as mono) until it ends or we stop."""
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame: Any = await track.recv()
                self.chunks.append(to_mono(frame))
                self.last_at = time.monotonic()

    def save(self, path: Path) -> None:
        """Write what was received as a 48 kHz mono WAV."""
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())


class LossPattern:
    """Which outgoing RTP packets to drop: ``rate`` at random (seeded), plus a burst of
    ``burst`` consecutive packets every ``burst_every`` packets (the first after one
    period). No I/O: ask ``drop()`` once per packet."""

    def __init__(self, rate: float, seed: int = 1, burst: int = 0,
                 burst_every: int = 250) -> None:
        self.rate = rate
        self.burst = burst
        self.burst_every = burst_every
        self._random = random.Random(seed)
        self.sent = 0
        self.dropped = 0

    def drop(self) -> bool:
        """Whether the next packet is lost."""
        index = self.sent
        self.sent += 1
        in_burst = (self.burst > 0 and index >= self.burst_every
                    and index % self.burst_every < self.burst)
        lost = in_burst or self._random.random() < self.rate
        self.dropped += lost
        return lost


def lossy_uplink(pc: RTCPeerConnection, pattern: LossPattern) -> None:
    """Drop outgoing RTP (never RTCP) per ``pattern``, after aiortc numbered the packets.

    Relies on aiortc's RTP sender calling ``transport._send_rtp`` through the DTLS
    transport instance (aiortc 1.16, pinned), as stage.ingest relies on the receiver side.
    """
    for transceiver in pc.getTransceivers():
        transport: Any = transceiver.sender.transport
        send = transport._send_rtp

        async def maybe_send(data: bytes, send: Any = send) -> None:
            if is_rtcp(data) or not pattern.drop():
                await send(data)

        transport._send_rtp = maybe_send


# The stage sends its return feed every 20 ms, silence included: 2 s is 100 frames in a
# row lost, which no lossy uplink made happen (bench/README.md); 3 s held failovers up.
RETURN_SILENCE_S = 2.0
RETURN_CHECK_S = 0.25     # how often the return feed's silence is looked at
CONNECT_GRACE_S = 7.0    # ICE and DTLS before the first return frame
CONNECT_TIMEOUT_S = 15.0  # ICE checks and DTLS after the answer, through TURN included
ICE_ATTEMPTS = 2          # ICE failures in a row (fresh ICE servers each time) before giving up
ICE_FAILED = "ICE failed"
ICE_HELP = ("no network path for the audio (UDP) between this machine and the stage; "
            "the server needs a TURN relay (townhall serve --turn-url URL "
            "--turn-secret-file PATH) or its --rtc-ports opened in the firewall")


async def fetch_ice(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    """The ICE servers the server hands out (TURN credentials fresh for this attempt);
    none from a server that predates GET /api/v1/ice."""
    r = await http.get("/api/v1/ice", headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 404:
        return []
    r.raise_for_status()
    servers: list[dict[str, Any]] = r.json()["iceServers"]
    return servers


async def watch_return(recorder: ReturnRecorder, dropped: asyncio.Event) -> None:
    """ICE consent takes ~30 s to notice a dead stage; a silent return feed shows it in 2."""
    while not dropped.is_set():
        await asyncio.sleep(RETURN_CHECK_S)
        if time.monotonic() - recorder.last_at > RETURN_SILENCE_S:
            dropped.set()


def offer_nack(sdp: str) -> str:
    """Our offer with ``a=rtcp-fb:<pt> nack`` on Opus: aiortc resends audio on NACK but
    does not offer it, and the stage only asks senders that do."""
    return with_nack(sdp, {int(pt) for pt in
                           re.findall(r"a=rtpmap:(\d+) opus/48000", sdp, re.I)})


def link_line(stats: Any, gauge: LinkGauge, now: float) -> tuple[str, str]:
    """The grade and a line about our uplink from the stage's receiver reports (aiortc's
    remote-inbound-rtp: cumulative packets lost, jitter in 48 kHz timestamp units), loss
    taken over the gauge's window as the stage does for the host's view."""
    jitter_s = float(stats.jitter) / SAMPLE_RATE
    lost = max(0, int(stats.packetsLost))
    loss = gauge.sample(max(0, int(stats.packetsReceived)), lost, now)
    quality = grade(loss, jitter_s)
    rtt = getattr(stats, "roundTripTime", None)
    rtt_text = f", rtt {rtt * 1000:.0f} ms" if rtt else ""
    return quality, (f"speak: link {quality} (loss {100 * loss:.1f} %, jitter "
                     f"{jitter_s * 1000:.0f} ms{rtt_text}, as the stage reports it)")


async def report_link(pc: RTCPeerConnection, every_s: float = 2.0) -> None:
    """Print our link quality when the stage's reports first come and whenever it changes."""
    said = ""
    gauge = LinkGauge()
    while True:
        await asyncio.sleep(every_s)
        for transceiver in pc.getTransceivers():
            report = await transceiver.sender.getStats()
            for stats in report.values():
                if getattr(stats, "type", "") != "remote-inbound-rtp":
                    continue
                quality, line = link_line(stats, gauge, time.monotonic())
                if quality != said:
                    print(line, file=sys.stderr, flush=True)
                    said = quality


async def adapt_bitrate(pc: RTCPeerConnection, source: SourceTrack,
                        adapter: BitrateAdapter, every_s: float = 0.25) -> None:
    """Feed each of the stage's receiver reports to ``adapter`` as it arrives (aiortc keeps
    the latest as remote-inbound-rtp, stamped when it came) and retune the source's
    bitrate and FEC size."""
    seen = None
    while True:
        await asyncio.sleep(every_s)
        for transceiver in pc.getTransceivers():
            for stats in (await transceiver.sender.getStats()).values():
                if getattr(stats, "type", "") != "remote-inbound-rtp" or stats.timestamp == seen:
                    continue
                seen = stats.timestamp
                lost = float(stats.fractionLost) / 256  # RTCP's 8-bit fraction
                rate = adapter.report(lost, stats.roundTripTime, time.monotonic())
                fec = adapter.expected_loss if source.setting[1] else 0  # 0: FEC off
                if (adapter.bitrate, fec) == source.setting:
                    continue
                fec_changed = fec != source.setting[1]
                source.retune(adapter.bitrate, fec)
                rtt = stats.roundTripTime
                why = (f"(stage reports loss {100 * lost:.0f} %"
                       + (f", rtt {rtt * 1000:.0f} ms)" if rtt else ")"))
                if rate is not None:
                    print(f"speak: bitrate {rate // 1000} kbit/s {why}",
                          file=sys.stderr, flush=True)
                if fec_changed:
                    print(f"speak: FEC for {fec} % loss {why}", file=sys.stderr, flush=True)


class SessionEnded(Exception):
    """Why a WHIP session ended (publish_once's answer), raised where it became known."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def ice_for(url: str, token: str, servers: list[dict[str, Any]] | None,
                  relay_only: bool) -> list[dict[str, Any]]:
    """``servers``, or the ICE servers the server hands out when it is None; a refusal,
    or no TURN server for ``--relay-only``, ends the session."""
    if servers is None:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                servers = await fetch_ice(http, token)
        except httpx.HTTPStatusError as exc:
            raise SessionEnded(f"refused {exc.response.status_code}: {exc.response.text}"
                               ) from exc
        except httpx.HTTPError as exc:
            raise SessionEnded(f"unreachable: {exc}") from exc
    if relay_only and not any(u.startswith("turn") for s in servers for u in s["urls"]):
        raise SessionEnded(f"{ICE_FAILED}: --relay-only, but the server hands out no TURN "
                           "server")
    return servers


async def post_offer(http: httpx.AsyncClient, space: str, auth: dict[str, str],
                     offer: str) -> tuple[str, str]:
    """POST the offer to /whip/<space>: the session's location and the stage's answer;
    any status but 201 ends the session."""
    r = await http.post(f"/whip/{space}", content=offer,
                        headers={**auth, "Content-Type": "application/sdp"})
    if r.status_code != 201:
        raise SessionEnded(f"refused {r.status_code}: {r.text}")
    return r.headers["location"], r.text


class SpeakerPeer:
    """One WHIP session's peer connection: the source track out, the return feed into
    ``recorder``, and events set when it connects or drops."""

    def __init__(self, servers: list[dict[str, Any]], relay_only: bool,
                 source: SourceTrack, recorder: ReturnRecorder) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(servers, relay_only=relay_only))
        self.relay_only = relay_only
        self.source = source
        self.recorder = recorder
        self.pc.addTransceiver(source, direction="sendrecv")
        self.connected = asyncio.Event()
        self.dropped = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._readers.append(asyncio.ensure_future(self.recorder.consume(track)))

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()
        if self.pc.connectionState in ("failed", "closed", "disconnected"):
            self.dropped.set()

    async def offer(self, nack: bool) -> str:
        """Our SDP offer (asking for NACK on Opus when ``nack``)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        if self.relay_only and " typ relay" not in sdp:
            raise SessionEnded(f"{ICE_FAILED}: no relay candidate (TURN refused or "
                               "unreachable)")
        return offer_nack(sdp) if nack else sdp

    async def answer(self, sdp: str) -> None:
        """Apply the stage's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def connect(self, stop: asyncio.Event, timeout_s: float) -> str | None:
        """None once ICE and DTLS are up; else why not (stopped meanwhile, no ICE path,
        or a failed DTLS handshake)."""
        if await wait_connected(self.connected, self.dropped, stop, timeout_s):
            return None
        if stop.is_set():
            return "stopped"
        if self.pc.iceConnectionState not in ("connected", "completed"):
            return f"{ICE_FAILED}: no connectivity within {timeout_s:g}s"
        return "DTLS handshake failed"

    async def live(self, stop: asyncio.Event, bitrate: int, adapt: bool) -> str:
        """Speak until we stop or the connection drops (the return feed falling silent
        counts); reports the link and adapts the bitrate meanwhile."""
        self.recorder.last_at = time.monotonic() + CONNECT_GRACE_S
        watchdog = asyncio.ensure_future(watch_return(self.recorder, self.dropped))
        helpers = [asyncio.ensure_future(report_link(self.pc))]
        if adapt:
            helpers.append(asyncio.ensure_future(
                adapt_bitrate(self.pc, self.source, BitrateAdapter(
                    bitrate, fec=FecSizer(start=self.source.setting[1])))))
        waiters = [asyncio.ensure_future(stop.wait()),
                   asyncio.ensure_future(self.dropped.wait()), watchdog]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in [*waiters, *helpers]:
            w.cancel()
        return "stopped" if stop.is_set() else "connection dropped"

    async def close(self) -> None:
        """Stop the return feed's readers, the source and the peer connection."""
        for task in self._readers:
            task.cancel()
        self.source.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


async def publish_once(url: str, space: str, token: str, pcm: np.ndarray,
                       recorder: ReturnRecorder, stop: asyncio.Event,
                       expected_loss: int = 10, loss: LossPattern | None = None, *,
                       servers: list[dict[str, Any]] | None = None,
                       relay_only: bool = False, nack: bool = True,
                       bitrate: int = SPEAKER_BITRATE, adapt: bool = True,
                       connect_timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """One WHIP session until it drops or we stop; returns why it ended. ICE servers are
    fetched from the server unless ``servers`` is given. ``bitrate`` is where the send rate
    starts and the most it adapts up to (``adapt``)."""
    auth = {"Authorization": f"Bearer {token}"}
    try:
        servers = await ice_for(url, token, servers, relay_only)
    except SessionEnded as ended:
        return ended.why
    peer = SpeakerPeer(servers, relay_only, SourceTrack(pcm, expected_loss, bitrate), recorder)
    try:
        offer = await peer.offer(nack)
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            location, answer = await post_offer(http, space, auth, offer)
            await peer.answer(answer)
            if loss is not None:
                lossy_uplink(peer.pc, loss)
            why = await peer.connect(stop, connect_timeout_s)
            if why is None:
                print(f"speak: live on {space} ({location})", file=sys.stderr, flush=True)
                why = await peer.live(stop, bitrate, adapt)
            # Leave the stage unless the connection dropped while live (then the stage
            # has let go of us, or is gone).
            if why != "connection dropped":
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(location, headers=auth)
            return why
    except SessionEnded as ended:
        return ended.why
    except httpx.HTTPError as exc:
        return f"unreachable: {exc}"
    finally:
        await peer.close()


async def wait_connected(connected: asyncio.Event, dropped: asyncio.Event,
                         stop: asyncio.Event, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the peer connection comes up within ``timeout_s``."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (connected, dropped, stop)]
    await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    return connected.is_set() and not stop.is_set()


def next_delay(pacer: RejoinPacer, why: str) -> float:
    """Seconds before the next offer, from why the last session ended (publish_once)."""
    if why == "connection dropped":  # it was live: its stage died or was cut off
        return pacer.dropped()
    if not why.startswith("refused "):
        return pacer.failed()
    head, _, body = why.partition(": ")
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return pacer.failed()
    retry_after = problem.get("retry_after")
    return pacer.refused(int(head.split()[1]), str(problem.get("type", "")).rsplit("/", 1)[-1],
                         float(retry_after) if isinstance(retry_after, int | float) else None)


async def speak(args: argparse.Namespace) -> int:
    """Speak until stopped, rejoining after each session that ends; the exit status."""
    pcm = tone(args.tone) if args.tone else read_wav(Path(args.file))
    recorder = ReturnRecorder()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)
    loss = (LossPattern(args.simulate_loss / 100, args.loss_seed, args.simulate_burst)
            if args.simulate_loss or args.simulate_burst else None)
    pacer = RejoinPacer()
    ice_failures = 0
    try:
        while not stop.is_set():
            why = await publish_once(args.url, args.space, args.token, pcm, recorder, stop,
                                     args.expected_loss, loss, relay_only=args.relay_only,
                                     nack=not args.no_nack, bitrate=args.bitrate * 1000,
                                     adapt=not args.no_adapt,
                                     connect_timeout_s=args.connect_timeout)
            if why == "stopped":
                break
            if why.startswith(("refused 401", "refused 403", "refused 404")):
                print(f"speak: {why}", file=sys.stderr)
                return 1
            # Twice in a row, each with fresh ICE servers (expired TURN credentials are
            # replaced on the retry): then it is the network, and waiting will not help.
            ice_failures = ice_failures + 1 if why.startswith(ICE_FAILED) else 0
            if ice_failures >= ICE_ATTEMPTS:
                print(f"speak: {why}: {ICE_HELP}", file=sys.stderr, flush=True)
                return 3
            delay = next_delay(pacer, why)
            print(f"speak: {why}; reconnecting in {delay:.1f}s", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    finally:
        if loss is not None:
            print(f"speak: dropped {loss.dropped} of {loss.sent} RTP packets",
                  file=sys.stderr, flush=True)
        if args.return_out:
            recorder.save(Path(args.return_out))
    return 0


def add_parser(sub: Any) -> None:
    """The ``speak`` subcommand and its options."""
    p = sub.add_parser("speak", help="stream a tone or a WAV onto a Space's stage over WHIP")
    p.add_argument("--url", required=True, help="townhall base URL (api role)")
    p.add_argument("--space", required=True)
    p.add_argument("--token", required=True, help="token of someone on the stage")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tone", type=float, help="sine tone in Hz")
    src.add_argument("--file", help="WAV (or any audio file) to loop")
    p.add_argument("--seconds", type=float, default=0, help="stop after S seconds")
    p.add_argument("--return-out", default="", help="save the return feed to this WAV")
    p.add_argument("--expected-loss", type=int, default=10, metavar="PCT",
                   help="uplink loss to protect against with Opus in-band FEC at the start; "
                        "then sized from the stage's reports unless --no-adapt (0 = no FEC)")
    p.add_argument("--bitrate", type=int, default=SPEAKER_BITRATE // 1000, metavar="KBPS",
                   help="Opus bitrate of the uplink in kbit/s, where it starts and the most "
                        "it adapts up to (default %(default)s)")
    p.add_argument("--no-adapt", action="store_true",
                   help="keep --bitrate and --expected-loss whatever the stage reports")
    p.add_argument("--no-nack", action="store_true",
                   help="do not offer to resend lost packets (leaves repair to FEC and PLC)")
    p.add_argument("--simulate-loss", type=float, default=0, metavar="PCT",
                   help="testing: drop this share of outgoing RTP packets at random")
    p.add_argument("--simulate-burst", type=int, default=0, metavar="N",
                   help="testing: also drop N packets in a row every 250 packets (5 s)")
    p.add_argument("--loss-seed", type=int, default=1, help="seed of --simulate-loss")
    p.add_argument("--relay-only", action="store_true",
                   help="send media only through the server's TURN relay "
                        "(iceTransportPolicy relay): checks a TURN setup")
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="S",
                   help="how long ICE and DTLS may take after the answer before an attempt "
                        f"counts as failed (default {CONNECT_TIMEOUT_S:g}; two failed "
                        "attempts in a row end speak with exit status 3)")
    p.set_defaults(func=lambda a: asyncio.run(speak(a)))
