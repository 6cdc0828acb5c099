"""The health plugin in a real sidecar-run: systemd's notify socket and watchdog, --probe flags
served over HTTP, and exec probes that hang and fork under the real reaper."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import child_env, free_port, python_app, running_sidecar
from tests.plugins.health.helpers import read_pids

SLEEPER = python_app("import time\ntime.sleep(60)")

#: An HTTP app that listens only after 0.8 s; /live fails while the file argv[2] exists.
SLOW_APP = python_app(
    """
    import http.server, os, sys, time
    port, fail_file, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    time.sleep(0.8)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            failing = self.path == "/live" and os.path.exists(fail_file)
            self.send_response(500 if failing else 200)
            self.end_headers()
            self.wfile.write(b"stuck\\n" if failing else b"ok\\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    open(marker, "a").close()  # listening; requests are answered from the next line on
    server.serve_forever()
    """
)


@contextmanager
def notify_socket(path: Path) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket standing in for systemd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        yield sock
    finally:
        sock.close()


class Datagrams:
    """Every message from the notify socket, with the time it arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seen: list[tuple[float, str]] = []

    def until(self, predicate_line: str, timeout: float = 15) -> None:
        """Receive until a message has the line ``predicate_line``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {predicate_line!r} in {[m for _, m in self.seen]}"
            self.sock.settimeout(remaining)
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.seen.append((time.monotonic(), message))
            if predicate_line in message.splitlines():
                return

    def during(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                self.seen.append((time.monotonic(), self.sock.recv(65536).decode()))
            except TimeoutError:
                return

    def times(self, line: str, since: float = 0.0) -> list[float]:
        return [t for t, m in self.seen if t >= since and line in m.splitlines()]


def events(stderr: bytes) -> list[dict[str, object]]:
    """The JSON log events sidecar-run wrote on stderr."""
    found = []
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def stop(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM sidecar-run; return its stderr once it exited."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    return stderr


@pytest.mark.slow
def test_ready_only_after_the_readiness_probe_and_watchdog_follows_liveness(
    tmp_path: Path,
) -> None:
    """READY=1 waits for the readiness probe; WATCHDOG=1 pings stop while liveness fails."""
    port = free_port()
    fail, marker = tmp_path / "fail", tmp_path / "listening"
    fast = 'period = "50ms"\ntimeout = "40ms"\n'
    config = tmp_path / "health.toml"
    config.write_text(
        f"""
        [[plugins.health.probes]]
        kind = "startup"
        tcp = "127.0.0.1:{port}"
        failure_threshold = 100
        {fast}
        [[plugins.health.probes]]
        kind = "readiness"
        http = "http://127.0.0.1:{port}/ready"
        {fast}
        [[plugins.health.probes]]
        kind = "liveness"
        http = "http://127.0.0.1:{port}/live"
        failure_threshold = 2
        {fast}
        """.replace("\n        ", "\n"),
        encoding="utf-8",
    )
    path = tmp_path / "notify.sock"
    args = ["--config", str(config), "--admin", "off", "--log-level", "info"]
    args += ["--start-seconds", "100ms", "--restart-delay", "1s", "--"]
    args += [*SLOW_APP, str(port), str(fail), str(marker)]
    env = child_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000")  # a ping every 100 ms
    with notify_socket(path) as sock, running_sidecar(args, env) as proc:
        grams = Datagrams(sock)
        grams.until("READY=1")
        assert marker.exists()  # the app answered before READY=1
        lines = [line for _, m in grams.seen for line in m.splitlines()]
        assert lines.index("STATUS=app running") < lines.index("READY=1")
        assert "STATUS=app running, not ready" not in lines  # readiness was never true before
        ready_at = grams.times("READY=1")[0]
        grams.during(0.5)
        assert len(grams.times("WATCHDOG=1", since=ready_at)) >= 3

        fail.touch()
        failed_at = time.monotonic()
        grams.until("STATUS=app backoff")
        grams.until("STATUS=app running")
        stopping_at = grams.times("STATUS=app stopping", since=failed_at)[0]
        running_at = grams.times("STATUS=app running", since=failed_at)[0]
        assert running_at - stopping_at >= 0.9  # the restart delay is 1 s
        pings = grams.times("WATCHDOG=1", since=failed_at)
        assert not [t for t in pings if stopping_at <= t <= running_at]  # silent until RUNNING
        fail.unlink()
        grams.until("STATUS=app ready")
        resumed = time.monotonic()
        grams.during(0.4)
        assert len(grams.times("WATCHDOG=1", since=resumed)) >= 2
        stderr = stop(proc)
    names = [e["event"] for e in events(stderr) if e.get("plugin") == "health"]
    assert names.count("liveness_restart_requested") == 1
    assert names.count("watchdog_enabled") == 1
    assert "watchdog_pings_stopped" in names
    assert "watchdog_pings_resumed" in names
    failed = [e for e in events(stderr) if e["event"] == "probe_failed"]
    assert [e["probe"] for e in failed] == ["liveness-http"]  # logged once, not per probe


@pytest.mark.slow
def test_probe_flags_serve_kubernetes_style_endpoints(tmp_path: Path) -> None:
    """--probe flags need no file; /readyz and /livez answer over HTTP; a strict liveness warns."""
    admin = free_port()
    with socket.create_server(("127.0.0.1", 0)) as target:
        port = target.getsockname()[1]
        args = ["--admin", f"127.0.0.1:{admin}", "--start-seconds", "100ms"]
        args += ["--probe", f"readiness=tcp://127.0.0.1:{port}"]
        args += ["--probe", f"liveness=tcp://127.0.0.1:{port}", "--", *SLEEPER]
        with running_sidecar(args) as proc:
            deadline = time.monotonic() + 10
            while True:
                try:
                    status, body = fetch(admin, "/readyz?verbose")
                except OSError:
                    status, body = 0, ""
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert (status, body) == (
                200,
                "[+]app ok: RUNNING\n"
                f"[+]health/readiness-tcp ok: connected to 127.0.0.1:{port} in "
                + body.split(" in ")[-1].split("\n")[0]
                + "\nreadyz check passed\n",
            )
            assert fetch(admin, "/livez") == (200, "ok\n")
            assert fetch(admin, "/healthz") == (200, "ok\n")
            stderr = stop(proc)
    warnings = [e for e in events(stderr) if e["event"] == "liveness_as_strict_as_readiness"]
    assert len(warnings) == 1
    assert "probes[1] (liveness 'liveness-tcp') is as strict as probes[0]" in str(warnings[0])


def fetch(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_hanging_forking_exec_probes_leave_no_process_behind(tmp_path: Path) -> None:
    """Exec probes that fork and hang are killed with their group at the timeout and reaped."""
    pids = tmp_path / "pids"
    config = tmp_path / "health.toml"
    script = f"echo $$ >> {pids}; sleep 30 & echo $! >> {pids}; wait"
    config.write_text(
        "[[plugins.health.probes]]\n"
        'kind = "readiness"\n'
        f"exec = {json.dumps(['sh', '-c', script.replace('$', '$$')])}\n"
        'period = "200ms"\n'
        'timeout = "100ms"\n',
        encoding="utf-8",
    )
    args = ["--config", str(config), "--admin", "off", "--", *SLEEPER]
    with running_sidecar(args) as proc:
        deadline = time.monotonic() + 10
        while len(list(read_pids(pids))) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the last probe's timeout has passed
        started = list(read_pids(pids))
        assert len(started) >= 6
        still = [pid for pid in started[:-2] if os.path.exists(f"/proc/{pid}")]
        assert still == []  # neither running nor a zombie: killed and reaped
        assert proc.poll() is None
        stop(proc)
