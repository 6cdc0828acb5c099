"""The admin listener: /status over TCP, port 0 and unix sockets; 404/405; busy addresses."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from sidecar_plugins.admin import AdminPlugin

from sidecar_runtime import Request, Response
from sidecar_runtime.testing import plugin_harness
from tests.conftest import free_port, python_app, run_sidecar
from tests.conftest import running_sidecar as sidecar

SLEEPER = python_app("import time\ntime.sleep(60)")


@pytest.fixture
def anyio_backend() -> str:
    """The admin plugin runs aiohttp: asyncio only."""
    return "asyncio"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (for the admin listener on unix:PATH)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def http_request(
    address: str, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to ``host:port`` or ``unix:PATH``; return status, headers and body."""
    conn: http.client.HTTPConnection
    if address.startswith("unix:"):
        conn = UnixHTTPConnection(address[5:])
    else:
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, body=body)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def wait_status(
    address: str, proc: subprocess.Popen[bytes], state: str = "RUNNING", timeout: float = 15
) -> dict[str, Any]:
    """Poll GET /status at ``address`` until the app is in ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "sidecar-run exited early"
        try:
            code, _, body = http_request(address, "GET", "/status")
            data: dict[str, Any] = json.loads(body)
            if code == 200 and data["state"] == state:
                return data
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the app never reached {state}"
        time.sleep(0.05)


@pytest.mark.slow
def test_status_fields(tmp_path: Path) -> None:
    """GET /status reports state, pid, uptime, starts, restarts, last exit, plugins, version."""
    port = free_port()
    admin = f"127.0.0.1:{port}"
    app = python_app(
        """
        import os, sys, time
        if not os.path.exists(sys.argv[1]):
            open(sys.argv[1], "w").close()
            sys.exit(3)
        time.sleep(60)
        """
    )
    marker = str(tmp_path / "crashed-once")
    args = ["--admin", admin, "--start-seconds", "100ms", "--restart", "on-failure"]
    with sidecar([*args, "--restart-delay", "10ms", "--", *app, marker]) as proc:
        data = wait_status(admin, proc)
        assert data["state"] == "RUNNING"
        assert isinstance(data["pid"], int)
        assert data["pid"] != proc.pid
        assert isinstance(data["uptime_seconds"], float)
        assert 0 <= data["uptime_seconds"] < 30
        assert data["starts"] == 2
        assert data["restarts"] == 1
        assert data["ready"] is True
        assert data["last_exit"]["code"] == 3
        assert data["last_exit"]["signal"] is None
        assert data["last_exit"]["returncode"] == 3
        assert data["last_exit"]["at"] > 0
        assert data["plugins"]["admin"]["state"] == "running"
        assert data["plugins"]["admin"]["info"] == {"listen": admin}
        assert data["runtime"]["version"] == "0.1.0"
        assert data["runtime"]["pid"] == proc.pid
        assert data["runtime"]["shutting_down"] is False
        assert data["command"][-1] == marker


@pytest.mark.slow
def test_json_404_405_and_head() -> None:
    """/status is sorted JSON; unknown paths 404; POST /status 405 with Allow; HEAD works."""
    port = free_port()
    admin = f"127.0.0.1:{port}"
    with sidecar(["--admin", admin, "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        wait_status(admin, proc)
        code, headers, body = http_request(admin, "GET", "/status")
        assert code == 200
        assert headers["Content-Type"] == "application/json"
        data = json.loads(body)
        assert list(data) == sorted(data)
        code, _, body = http_request(admin, "GET", "/nope")
        assert code == 404
        assert b"/nope" in body
        code, headers, _ = http_request(admin, "POST", "/status", body=b"")
        assert code == 405
        assert headers["Allow"] == "GET"
        code, _, body = http_request(admin, "HEAD", "/status")
        assert code == 200
        assert body == b""


@pytest.mark.slow
def test_port_zero_reports_the_bound_port(tmp_path: Path) -> None:
    """With --admin 127.0.0.1:0 the admin_listening log event names the bound port."""
    log = tmp_path / "log.jsonl"
    args = ["--admin", "127.0.0.1:0", "--log-level", "info", "--log-file", str(log)]
    with sidecar([*args, "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        deadline = time.monotonic() + 15
        address = None
        while address is None:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "no admin_listening event"
            if log.exists():
                for line in log.read_text().splitlines():
                    event = json.loads(line)
                    if event.get("event") == "admin_listening":
                        address = event["address"]
            time.sleep(0.05)
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        data = wait_status(address, proc)
        assert data["plugins"]["admin"]["info"]["listen"] == address


@pytest.mark.slow
def test_unix_socket_admin_with_status_command(tmp_path: Path) -> None:
    """--admin unix:PATH serves /status there, and `status --admin unix:PATH` reads it."""
    path = tmp_path / "a.sock"
    admin = f"unix:{path}"
    with sidecar(["--admin", admin, "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        data = wait_status(admin, proc)
        assert data["plugins"]["admin"]["info"]["listen"] == admin
        result = run_sidecar(["status", "--admin", admin], timeout=20)
        assert result.returncode == 0, result.stderr
        assert "app:      RUNNING" in result.stdout.decode()
        assert http_request(admin, "GET", "/nope")[0] == 404


@pytest.mark.slow
def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    """A leftover socket file nobody listens on does not stop the admin listener."""
    path = tmp_path / "a.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    admin = f"unix:{path}"
    with sidecar(["--admin", admin, "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        assert wait_status(admin, proc)["state"] == "RUNNING"


@pytest.mark.slow
def test_busy_configured_port_is_a_startup_error(tmp_path: Path) -> None:
    """A busy --admin address exits 2 with one line naming it, and the app never starts."""
    marker = tmp_path / "started"
    app = python_app(f"open({str(marker)!r}, 'w')")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_sidecar(["--admin", f"127.0.0.1:{port}", "--", *app], timeout=20)
    assert result.returncode == 2
    text = result.stderr.decode()
    assert text.count("\n") == 1, text
    assert f"127.0.0.1:{port}" in text
    assert "plugins.admin.listen" in text
    assert not marker.exists()


@pytest.mark.slow
def test_busy_default_port_is_a_warning(tmp_path: Path) -> None:
    """With no --admin and 127.0.0.1:9901 busy, the run goes on with a warning."""
    busy = socket.socket()
    try:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("127.0.0.1", 9901))
        except OSError as err:
            pytest.skip(f"cannot occupy 127.0.0.1:9901 ({err.strerror})")
        busy.listen()
        marker = tmp_path / "started"
        app = python_app(f"open({str(marker)!r}, 'w'); raise SystemExit(4)")
        result = run_sidecar(["--", *app], timeout=20)
    finally:
        busy.close()
    assert result.returncode == 4
    assert marker.exists()
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    skipped = [e for e in events if e["event"] == "admin_listen_skipped"]
    assert len(skipped) == 1
    assert skipped[0]["level"] == "warning"
    assert skipped[0]["address"] == "127.0.0.1:9901"


@pytest.mark.anyio
async def test_admin_plugin_serves_routes_in_process(tmp_path: Path) -> None:
    """The admin plugin serves the route table: mutating POST from loopback, streams, 500s."""
    sock = str(tmp_path / "admin.sock")
    posts: list[bytes] = []

    async def reset(request: Request) -> Response:
        posts.append(request.body)
        return Response.text("reset\n")

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk{i}\n".encode()

        return Response(body=chunks())

    async def broken(request: Request) -> Response:
        raise RuntimeError("handler bug")

    with anyio.fail_after(15):
        async with plugin_harness(AdminPlugin, {"listen": f"unix:{sock}"}, name="admin") as admin:
            table = admin.runtime.routes
            table.add("POST", "/reset", reset, owner="test", mutating=True)
            table.add("GET", "/stream", stream, owner="test")
            table.add("GET", "/broken", broken, owner="test")
            assert admin.info == {"listen": f"unix:{sock}"}
            connector = aiohttp.UnixConnector(path=sock)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get("http://admin/status") as reply:
                    assert reply.status == 200
                    assert (await reply.json())["plugins"]["admin"]["state"] == "running"
                async with session.post("http://admin/reset", data=b"now") as reply:
                    assert reply.status == 200
                    assert await reply.text() == "reset\n"
                async with session.get("http://admin/reset") as reply:
                    assert reply.status == 405
                    assert reply.headers["Allow"] == "POST"
                async with session.get("http://admin/stream") as reply:
                    assert reply.status == 200
                    assert await reply.text() == "chunk0\nchunk1\nchunk2\n"
                async with session.get("http://admin/broken") as reply:
                    assert reply.status == 500
    assert posts == [b"now"]


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("fe80::1%eth0", False),
        ("10.0.0.7", False),
        ("203.0.113.5", False),
        (None, True),
        ("", True),
        ("not-an-ip", False),
    ],
)
def test_loopback_detection_for_mutating_routes(remote: str | None, local: bool) -> None:
    """Mutating routes are open to loopback and unix-socket peers only (tests bind 127.0.0.1)."""
    from sidecar_plugins.admin import _is_local

    assert _is_local(remote) is local


@pytest.mark.slow
def test_post_restart_restarts_the_app_and_get_is_refused(tmp_path: Path) -> None:
    """POST /restart stops the app gracefully and starts it again; GET /restart is 405."""
    admin = f"127.0.0.1:{free_port()}"
    runs = tmp_path / "runs"
    app = python_app(
        f"""
        import signal, sys, time
        with open({str(runs)!r}, "a") as f:
            f.write("run\\n")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(1)
        """
    )
    args = ["--admin", admin, "--start-seconds", "100ms", "--restart-delay", "10ms"]
    with sidecar([*args, "--", *app]) as proc:
        first = wait_status(admin, proc)
        code, _, _ = http_request(admin, "GET", "/restart")
        assert code == 405
        code, _, body = http_request(admin, "POST", "/restart")
        assert code == 202
        assert json.loads(body)["restarting"] is True
        deadline = time.monotonic() + 15
        while True:
            second = wait_status(admin, proc)
            if second["pid"] != first["pid"]:
                break
            assert time.monotonic() < deadline, "the app was not restarted"
            time.sleep(0.05)
        assert second["restarts"] == 1
        assert second["last_exit"]["code"] == 0  # it stopped in its own SIGTERM handler
    assert runs.read_text() == "run\nrun\n"
