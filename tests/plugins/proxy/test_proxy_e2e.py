"""The proxy in a real ``sidecar-run --proxy``: an app restart under steady traffic with no
failed request, a graceful shutdown that finishes an in-flight request, usage errors."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time

import pytest

from tests.conftest import free_port, python_app, run_sidecar, running_sidecar

#: An HTTP/1.1 keep-alive app: ``/slow`` answers after 1 s, everything else at once.
APP = python_app(
    """
    import http.server, sys, time

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/slow":
                time.sleep(1.0)
            body = b"ok " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def get(port: int, path: str = "/", timeout: float = 15.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path)
        return conn.getresponse().status
    finally:
        conn.close()


def wait_ok(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if get(port, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the proxy on port {port} never answered 200")


def sidecar_args(proxy: int, app: int, admin: int) -> list[str]:
    return [
        "--admin",
        f"127.0.0.1:{admin}",
        "--start-seconds",
        "300ms",
        "--proxy",
        f"127.0.0.1:{proxy}=http://127.0.0.1:{app}",
        "--",
        *APP,
        str(app),
    ]


@pytest.mark.slow
def test_app_restart_under_traffic_loses_no_request() -> None:
    """GETs sent continuously while the app restarts (POST /restart) all succeed: the proxy
    holds them while the app is down and retries the ones it cut off."""
    proxy, app, admin = free_port(), free_port(), free_port()
    with running_sidecar(sidecar_args(proxy, app, admin)) as proc:
        wait_ok(proxy)
        results: list[int | str] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    results.append(get(proxy)[0])
                except OSError as err:
                    results.append(repr(err))

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.3)
        assert post(admin, "/restart") == 202
        restarted = time.monotonic() + 10
        while time.monotonic() < restarted:
            status = json.loads(get(admin, "/status")[1])
            if status["restarts"] == 1 and status["ready"]:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 143  # the app died of its SIGTERM
    failures = [r for r in results if r != 200]
    assert len(results) > 20
    assert failures == []
    assert status["restarts"] == 1


@pytest.mark.slow
def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    """SIGTERM while a slow request is in flight: the proxy stops accepting, the request
    completes with 200, and only then is the app stopped."""
    proxy, app, admin = free_port(), free_port(), free_port()
    with running_sidecar(["--log-level", "info", *sidecar_args(proxy, app, admin)]) as proc:
        wait_ok(proxy)
        outcome: list[object] = []
        slow = threading.Thread(target=lambda: outcome.append(get(proxy, "/slow")))
        slow.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        slow.join(timeout=15)
        assert proc.wait(timeout=15) == 143  # the app died of its SIGTERM
        _, stderr = proc.communicate(timeout=5)
    assert outcome == [(200, b"ok /slow")]
    with pytest.raises(ConnectionRefusedError):
        get(proxy, timeout=1)
    text = stderr.decode()
    assert text.index('"proxy_drained"') < text.index('"app_stop_signalled"')


def test_bad_proxy_flags_are_usage_errors() -> None:
    """A malformed --proxy or TLS flags without --proxy: exit 2 with one line on stderr."""
    for args in (
        ["--proxy", "8080", "--", "true"],
        ["--proxy", "127.0.0.1:1=ftp://x:1", "--", "true"],
        ["--tls-cert", "c.pem", "--", "true"],
        ["--proxy", "127.0.0.1:1=http://127.0.0.1:2", "--tls-cert", "c.pem", "--", "true"],
    ):
        result = run_sidecar(args)
        assert result.returncode == 2, args
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1, (args, lines)
        assert "error" in lines[0], (args, lines)
