"""``townhall replay``: download a Space's recording (or a clip), with a progress bar, and
save it as WAV (decoded) or as the file itself: Ogg/Opus (``--out F.opus``) or Opus in MP4
(``--out F.m4a``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from townhall.media.chunk import SAMPLE_RATE


class ReplayError(Exception):
    """The server refused, or the file could not be read."""


def source_url(base: str, space: str | None, clip: str | None, ext: str = "opus") -> str:
    """Where the file is: the Space's replay, or one clip (``ext``: opus or m4a)."""
    if clip:
        return f"{base.rstrip('/')}/clips/{clip}.{ext}"
    return f"{base.rstrip('/')}/replay/{space}.{ext}"


def download(url: str, out: Path, token: str | None, quiet: bool = False) -> int:
    """Fetch ``url`` into ``out`` with a progress bar; returns the bytes written."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.stream("GET", url, headers=headers, timeout=30, follow_redirects=True) as r:
        if r.status_code != 200:
            r.read()
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ReplayError(f"{r.status_code}: {detail}")
        total = int(r.headers.get("content-length") or 0) or None
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        written = 0
        with Progress(*columns, disable=quiet, transient=False) as progress, \
                out.open("wb") as f:
            task = progress.add_task(url.rsplit("/", 1)[-1], total=total)
            for part in r.iter_bytes():
                f.write(part)
                written += len(part)
                progress.update(task, advance=len(part))
    return written


def to_wav(src: Path, out: Path) -> float:
    """Decode an Ogg/Opus file to mono 48 kHz 16-bit WAV; returns its seconds."""
    samples = 0
    with av.open(str(src)) as container, wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        resampler: Any = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for done in resampler.resample(frame):
                pcm = np.asarray(done.to_ndarray(), dtype=np.int16).reshape(-1)
                wav.writeframes(pcm.tobytes())
                samples += len(pcm)
    return samples / SAMPLE_RATE


def _run(args: argparse.Namespace) -> int:
    if not args.space and not args.clip:
        print("replay: give --space or --clip", file=sys.stderr)
        return 2
    out = Path(args.out)
    as_served = out.suffix.lower() in (".opus", ".ogg", ".m4a")
    url = source_url(args.url, args.space, args.clip,
                     "m4a" if out.suffix.lower() == ".m4a" else "opus")
    try:
        if as_served:
            size = download(url, out, args.token, args.quiet)
            print(f"replay: saved {size} bytes to {out}", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "replay.opus"
            download(url, src, args.token, args.quiet)
            seconds = to_wav(src, out)
    except (ReplayError, httpx.HTTPError, av.error.FFmpegError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    print(f"replay: wrote {seconds:.1f} s to {out}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``townhall replay``."""
    p = sub.add_parser("replay", help="download a recording or a clip (WAV or Ogg/Opus)")
    p.add_argument("--url", required=True, help="base URL of townhall (the api)")
    p.add_argument("--space", default=None, help="Space id: its recording")
    p.add_argument("--clip", default=None, help="clip id (instead of --space)")
    p.add_argument("--out", required=True,
                   help="F.wav (decoded), or F.opus / F.m4a (the file as served)")
    p.add_argument("--token", default=None, help="token for a private Space")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
