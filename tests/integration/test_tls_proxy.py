"""townhall behind nginx with TLS, using docs/deploy/nginx.conf as documented (names, paths
and ports swapped): the web app, the API, WHIP from `townhall speak`, a WebSocket listener
and the endless Ogg stream all through the proxy, under a CA made for the test; and the
client's own address, not the proxy's, is what guest sessions are limited by. (Chromium
publishing through the proxy: tests/web/test_tls_proxy_browser.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Served, running
from tests.stages import live_space_with, speak
from tests.tlsproxy import needs_nginx, nginx_in_front, trusting
from tests.tone import hear_tone
from tests.turn import host_ipv4
from townhall.procs import stop_process

pytestmark = [pytest.mark.timeout(180), needs_nginx]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, Path]]:
    """townhall on loopback (its own: a test here counts its guest sessions), nginx with TLS
    in front; (served, https URL, ca.pem)."""
    where = tmp_path_factory.mktemp("tls")
    with running(where / "data") as served, nginx_in_front(served, where) as (url, ca, _):
        yield served, url, ca


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
    speaker = speak(url, space, people[0][0], tmp_path / "speak.log", seconds=60,
                    env={"SSL_CERT_FILE": str(ca)})
    try:
        assert await hear_tone(url, space, 440, within_s=30), \
            (tmp_path / "speak.log").read_text()
        pages = ogg_pages(url, space, ca)
        assert pages >= 5  # the endless stream flows page by page through the proxy
    finally:
        stop_process(speaker, 10)


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
