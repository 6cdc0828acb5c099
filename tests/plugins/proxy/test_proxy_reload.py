"""A config reload (``POST /reload``) that changes a proxy route under steady traffic: applied
in place, and not one request fails."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, running_sidecar
from tests.plugins.proxy.test_proxy_e2e import APP, get, wait_ok

pytestmark = pytest.mark.slow


class Other(BaseHTTPRequestHandler):
    """The second upstream: answers ``other``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"other"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def config_text(proxy: int, admin: int, app: int, other: int, target: str) -> str:
    command = json.dumps([*APP, str(app)])
    return f"""
[app]
command = {command}
[restart]
start_seconds = "300ms"
[plugins.admin]
listen = "127.0.0.1:{admin}"
[plugins.metrics]
enabled = false
[plugins.proxy]
listeners = [{{ address = "127.0.0.1:{proxy}" }}]
[plugins.proxy.upstreams.app]
endpoints = ["127.0.0.1:{app}"]
[plugins.proxy.upstreams.other]
endpoints = ["127.0.0.1:{other}"]
[[plugins.proxy.routes]]
match = {{ prefix = "/" }}
upstream = "{target}"
"""


def test_a_route_change_under_traffic_fails_no_request(tmp_path: Path) -> None:
    """Clients loop over GET while the route moves from the app to another upstream."""
    proxy, admin, app = free_port(), free_port(), free_port()
    other_server = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    other = other_server.server_address[1]
    threading.Thread(target=other_server.serve_forever, daemon=True).start()
    config = tmp_path / "sidecar.toml"
    config.write_text(config_text(proxy, admin, app, other, "app"))
    results: list[tuple[int, bytes]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                results.append(get(proxy, "/x", timeout=10))
            except OSError as err:
                errors.append(repr(err))

    try:
        with running_sidecar(["--config", str(config)]):
            wait_ok(proxy)
            threads = [threading.Thread(target=client) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            config.write_text(config_text(proxy, admin, app, other, "other"))
            request = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
                outcome = json.loads(reply.read())
            seen_at_reload = len(results)
            time.sleep(0.3)
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
    finally:
        stop.set()
        other_server.shutdown()
        other_server.server_close()
    assert outcome["plugins_reloaded"] == ["proxy"], outcome
    assert errors == []
    assert {status for status, _ in results} == {200}
    bodies = [body for _, body in results]
    assert b"ok /x" in bodies[:seen_at_reload]
    assert bodies[-1] == b"other"
    assert b"ok /x" not in bodies[seen_at_reload + 8 :]  # in flight at the reload, at most
