"""nginx with TLS in front of a townhall, configured by docs/deploy/nginx.conf as documented
(names, paths and ports swapped), under a CA made for the test."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.certs import make_ca
from tests.conftest import Served
from tests.turn import host_ipv4
from tests.waiting import until
from townhall.bus.embedded import free_port
from townhall.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None and not Path(NGINX).exists(),
                                 reason="no nginx (`make test` installs it as root)")


def trusting(ca: Path) -> ssl.SSLContext:
    """A client context that trusts the test's CA (and nothing else)."""
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


@contextmanager
def nginx_in_front(served: Served, where: Path) -> Iterator[tuple[str, Path, Path]]:
    """nginx proxying to ``served`` with TLS until the block ends: (https URL, the CA's
    certificate, the server's certificate)."""
    where.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(where, ["localhost"], ["127.0.0.1", host_ipv4()])
    port = free_port()
    conf = nginx_conf(where, port, served.url.removeprefix("http://"), cert, key)
    proc = subprocess.Popen([NGINX, "-p", str(where), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=(where / "nginx.out").open("wb"))
    url = f"https://127.0.0.1:{port}"

    def proxying() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((where / "nginx.out").read_text())
        try:
            return httpx.get(url + "/healthz", verify=trusting(ca), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        until(proxying, 10, "nginx proxying")
        yield url, ca, cert
    finally:
        stop_process(proc, 5)
