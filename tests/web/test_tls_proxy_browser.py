"""Chromium speaks over WHIP through nginx with TLS (docs/deploy/nginx.conf as documented):
the page is a secure context, takes its ICE servers from the API, and its microphone's tone
is heard through the proxy."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import Served
from tests.stages import live_space_with
from tests.tlsproxy import needs_nginx, nginx_in_front
from tests.tone import hear_tone
from tests.web.chromium import PUBLISH_JS, async_chromium, needs_chromium, tone_wav

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180), needs_nginx, needs_chromium]


def spki_pin(cert: Path) -> str:
    """The certificate's public-key hash as Chromium's --ignore-certificate-errors-spki-list
    takes it: how a headless Chromium is told to trust this one server key."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


async def test_chromium_speaks_over_whip_through_tls(townhall_shared: Served, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    served = townhall_shared
    space, people = live_space_with(served, "Host")
    wav = tone_wav(tmp_path / "mic.wav", 440, seconds=5)
    with nginx_in_front(served, tmp_path / "tls") as (url, ca, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # for this process's WebSocket client
        trust = f"--ignore-certificate-errors-spki-list={spki_pin(cert)}"
        async with async_chromium(mic=wav, extra=(trust,)) as browser:
            page = await browser.new_page()
            await page.goto(f"{url}/healthz")
            assert await page.evaluate("window.isSecureContext") is True
            location = await page.evaluate(PUBLISH_JS, [space, people[0][0], True])
            assert str(location).startswith(f"/whip/{space}/"), location
            assert await hear_tone(url, space, 440, within_s=30), served.tail()
