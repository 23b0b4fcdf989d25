"""townhall behind nginx with TLS, using docs/deploy/nginx.conf as documented (names, paths
and ports swapped): the web app, the API, WHIP from `townhall speak`, a WebSocket listener
and the endless Ogg stream all through the proxy, under a CA made for the test; and the
client's own address, not the proxy's, is what guest sessions are limited by."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import async_playwright

from tests.certs import make_ca
from tests.conftest import Served, start_townhall
from tests.stages import live_space_with
from tests.tone import hear_tone
from tests.turn import host_ipv4
from tests.web.chromium import CHROMIUM, needs_chromium, tone_wav
from townhall.bus.embedded import free_port
from townhall.procs import stop_process

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("nginx") is None and
                                 not Path("/usr/sbin/nginx").exists(),
                                 reason="no nginx (`make test` installs it as root)")]

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def nginx_conf(where: Path, port: int, upstream: str, cert: Path, key: Path) -> Path:
    """docs/deploy/nginx.conf with this test's port, upstream and files, in a main config."""
    site = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    for old, new in (("listen 443 ssl;", f"listen {port} ssl;"),
                     ("127.0.0.1:8080", upstream),
                     ("/etc/ssl/live.example.org.pem", str(cert)),
                     ("/etc/ssl/live.example.org.key", str(key))):
        assert old in site, old
        site = site.replace(old, new)
    temp = "\n".join(f"    {kind}_temp_path {where / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = where / "nginx.conf"
    conf.write_text(f"{user}daemon off;\npid {where / 'nginx.pid'};\n"
                    f"error_log {where / 'error.log'} info;\n"
                    "events { worker_connections 256; }\n"
                    f"http {{\n    access_log {where / 'access.log'};\n{temp}\n{site}\n}}\n")
    return conf


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, Path]]:
    """townhall on loopback, nginx with TLS in front; (served, https URL, ca.pem)."""
    where = tmp_path_factory.mktemp("tls")
    served = start_townhall(where / "data")
    ca, cert, key = make_ca(where, ["localhost"], ["127.0.0.1", host_ipv4()])
    port = free_port()
    conf = nginx_conf(where, port, served.url.removeprefix("http://"), cert, key)
    proc = subprocess.Popen([NGINX, "-p", str(where), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=(where / "nginx.out").open("wb"))
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(100):  # 10 s at most
            if proc.poll() is not None:
                raise RuntimeError((where / "nginx.out").read_text())
            try:
                if httpx.get(url + "/healthz", verify=trusting(ca), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise TimeoutError("nginx not proxying within 10 s")
        yield served, url, ca
    finally:
        stop_process(proc, 5)
        served.stop()


def test_web_app_and_api_through_tls(proxied: tuple[Served, str, Path]) -> None:
    _, url, ca = proxied
    with pytest.raises(httpx.ConnectError):  # not trusted without the test CA
        httpx.get(url + "/", timeout=5)
    page = httpx.get(url + "/", verify=trusting(ca), timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    guest = httpx.post(url + "/api/v1/sessions", json={"name": "Ada"}, verify=trusting(ca),
                       timeout=10)
    assert guest.status_code == 201
    ice = httpx.get(url + "/api/v1/ice", verify=trusting(ca), timeout=10,
                    headers={"Authorization": f"Bearer {guest.json()['token']}"})
    assert ice.status_code == 200 and ice.json()["iceServers"] == []


async def test_whip_websocket_and_ogg_through_tls(proxied: tuple[Served, str, Path],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    served, url, ca = proxied
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # for this process's WebSocket client
    space, people = live_space_with(served, "Host")
    speaker = start_speaker(url, space, people[0][0], ca, tmp_path / "speak.log")
    try:
        assert await hear_tone(url, space, 440, within_s=30), \
            (tmp_path / "speak.log").read_text()
        pages = ogg_pages(url, space, ca)
        assert pages >= 5  # the endless stream flows page by page through the proxy
    finally:
        stop_process(speaker, 10)


def start_speaker(url: str, space: str, token: str, ca: Path,
                  log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "townhall", "speak", "--url", url, "--space", space,
         "--token", token, "--tone", "440", "--seconds", "60"],
        env={**os.environ, "SSL_CERT_FILE": str(ca)}, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"))


def ogg_pages(url: str, space: str, ca: Path, want: int = 5) -> int:
    """Ogg pages read from /listen/<id>.opus through the proxy (stops at ``want``)."""
    seen = b""
    with httpx.stream("GET", f"{url}/listen/{space}.opus", verify=trusting(ca),
                      timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/ogg"
        for data in r.iter_bytes():
            seen += data
            if seen.count(b"OggS") >= want:
                break
    return seen.count(b"OggS")


def test_the_client_address_is_forwarded(proxied: tuple[Served, str, Path]) -> None:
    _, url, ca = proxied
    port = url.rsplit(":", 1)[1]
    outside = host_ipv4()  # a non-loopback client: its guest sessions are limited
    transport = httpx.HTTPTransport(local_address=outside, verify=trusting(ca))
    with httpx.Client(transport=transport, verify=trusting(ca), timeout=10) as client:
        statuses = [client.post(f"https://{outside}:{port}/api/v1/sessions",
                                json={"name": "Many"}).status_code for _ in range(45)]
    assert 429 in statuses and statuses[0] == 201
    # The proxy itself is on loopback: had it not passed the address on, nobody would be
    # limited. This machine's own requests still get in.
    assert httpx.post(url + "/api/v1/sessions", json={"name": "Me"}, verify=trusting(ca),
                      timeout=10).status_code == 201


PUBLISH_JS = """
async ([space, token]) => {
  const auth = {"Authorization": `Bearer ${token}`};
  const ice = await (await fetch("/api/v1/ice", {headers: auth})).json();
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});  // HTTPS only
  const pc = new RTCPeerConnection({iceServers: ice.iceServers});
  pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 5000);
  });
  const r = await fetch(`/whip/${space}`, {method: "POST", body: pc.localDescription.sdp,
    headers: {...auth, "Content-Type": "application/sdp"}});
  if (r.status !== 201) return `refused ${r.status}: ${await r.text()}`;
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  window.pc = pc;
  return r.headers.get("Location");
}
"""


def spki_pin(cert: Path) -> str:
    """The certificate's public-key hash as Chromium's --ignore-certificate-errors-spki-list
    takes it: how a headless Chromium is told to trust this one server key."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@needs_chromium
async def test_chromium_speaks_over_whip_through_tls(proxied: tuple[Served, str, Path],
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    served, url, ca = proxied
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    space, people = live_space_with(served, "Host")
    wav = tone_wav(tmp_path / "mic.wav", 440, seconds=5)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                f"--ignore-certificate-errors-spki-list={spki_pin(ca.parent / 'server.pem')}",
                "--disable-features=WebRtcHideLocalIpsWithMdns"])
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/healthz")
            assert await page.evaluate("window.isSecureContext") is True
            location = await page.evaluate(PUBLISH_JS, [space, people[0][0]])
            assert str(location).startswith(f"/whip/{space}/"), location
            assert await hear_tone(url, space, 440, within_s=30), served.tail()
        finally:
            await browser.close()
