"""Debian's Chromium for the browser tests (never a downloaded browser), launched one way."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's /usr/bin/chromium")


def tone_wav(path: Path, freq: float = 440.0, seconds: float = 3.0) -> Path:
    """A 48 kHz mono 16-bit sine for Chromium's fake microphone (it loops the file)."""
    t = np.arange(int(48_000 * seconds)) / 48_000
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(pcm.tobytes())
    return path


@contextmanager
def chromium(*, fake_media: bool = True, mic: Path | None = None) -> Iterator[Browser]:
    """Headless Chromium; ``fake_media`` grants a fake microphone (fed from ``mic``, a WAV,
    when given) without asking."""
    args = ["--headless", "--no-sandbox", "--disable-gpu"]
    if fake_media:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}")
    args += ["--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()
