"""systemd notify protocol: datagrams to $NOTIFY_SOCKET from a real sidecar-run."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import child_env, python_app, run_sidecar
from tests.conftest import running_sidecar as sidecar

SLEEPER = python_app("import time\ntime.sleep(60)")
RUN = ["--admin", "off", "--start-seconds", "200ms", "--"]


@contextmanager
def notify_socket(address: str | bytes) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket standing in for the service manager."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket, timeout: float) -> str | None:
    """One datagram as text, or None after ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536).decode()
    except TimeoutError:
        return None


def receive_until(sock: socket.socket, needle: str, timeout: float = 15) -> list[str]:
    """Collect datagrams until one contains the line ``needle``; fail after ``timeout``."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} in {messages}"
        message = receive(sock, remaining)
        if message is None:
            continue
        messages.append(message)
        if needle in message.splitlines():
            return messages


def lines(messages: list[str]) -> list[str]:
    return [line for message in messages for line in message.splitlines()]


@pytest.mark.slow
def test_ready_status_and_stopping(tmp_path: Path) -> None:
    """READY=1 comes after start_seconds; STATUS= follows state changes; SIGTERM → STOPPING=1."""
    path = str(tmp_path / "notify.sock")
    with notify_socket(path) as sock:
        began = time.monotonic()
        with sidecar([*RUN, *SLEEPER], child_env(NOTIFY_SOCKET=path)) as proc:
            before_ready = receive_until(sock, "READY=1")
            elapsed = time.monotonic() - began
            assert elapsed >= 0.2
            seen = lines(before_ready)
            assert seen[0] == "STATUS=app starting"
            assert seen.count("READY=1") == 1
            assert "STATUS=app ready" in seen
            proc.send_signal(signal.SIGTERM)
            after = receive_until(sock, "STATUS=app exited")
            assert proc.wait(timeout=15) == 128 + signal.SIGTERM
        rest = lines(after)
        assert "STOPPING=1" in rest
        assert any(line.startswith("STATUS=stopping: received SIGTERM") for line in rest)
        assert rest.index("STOPPING=1") < rest.index("STATUS=app exited")
        assert "STATUS=app stopping" in rest
        assert "READY=1" not in rest
        assert "STATUS=app running" in seen + rest


@pytest.mark.slow
def test_documented_sequence_with_one_crash(tmp_path: Path) -> None:
    """A crash after RUNNING, a restart and SIGTERM send exactly the messages the docs show."""
    path = str(tmp_path / "notify.sock")
    app = python_app(
        """
        import os, sys, time
        if not os.path.exists(sys.argv[1]):
            open(sys.argv[1], "w").close()
            time.sleep(0.4)
            sys.exit(1)
        time.sleep(60)
        """
    )
    marker = str(tmp_path / "crashed")
    args = ["--admin", "off", "--start-seconds", "200ms", "--restart", "on-failure"]
    with notify_socket(path) as sock:
        env = child_env(NOTIFY_SOCKET=path)
        with sidecar([*args, "--restart-delay", "10ms", "--", *app, marker], env) as proc:
            first = receive_until(sock, "READY=1")
            second = receive_until(sock, "STATUS=app ready")
            proc.send_signal(signal.SIGTERM)
            last = receive_until(sock, "STATUS=app exited")
            assert proc.wait(timeout=15) == 128 + signal.SIGTERM
    assert first + second + last == [
        "STATUS=app starting",
        "STATUS=app running",
        "READY=1\nSTATUS=app ready",
        "STATUS=app backoff",
        "STATUS=app starting",
        "STATUS=app running",
        "STATUS=app ready",
        "STOPPING=1\nSTATUS=stopping: received SIGTERM",
        "STATUS=app stopping",
        "STATUS=app exited",
    ]


@pytest.mark.slow
def test_app_exit_is_reported(tmp_path: Path) -> None:
    """An app that exits on its own sends STOPPING=1 and its final state; status is the app's."""
    path = str(tmp_path / "notify.sock")
    app = python_app("import time\ntime.sleep(0.4)\nraise SystemExit(6)")
    with notify_socket(path) as sock:
        result = run_sidecar([*RUN, *app], env=child_env(NOTIFY_SOCKET=path), timeout=20)
        assert result.returncode == 6
        messages: list[str] = []
        while (message := receive(sock, 0.2)) is not None:
            messages.append(message)
    assert messages == [
        "STATUS=app starting",
        "STATUS=app running",
        "READY=1\nSTATUS=app ready",
        "STATUS=app exited",
        "STOPPING=1\nSTATUS=stopping: app exited",
    ]


@pytest.mark.slow
def test_abstract_socket_name() -> None:
    """NOTIFY_SOCKET=@name reaches an abstract-namespace socket."""
    name = f"sidecar-test-{uuid.uuid4().hex}"
    env = child_env(NOTIFY_SOCKET=f"@{name}")
    with (
        notify_socket(b"\0" + name.encode()) as sock,
        sidecar([*RUN, *SLEEPER], env) as proc,
    ):
        seen = lines(receive_until(sock, "READY=1"))
        assert "STATUS=app starting" in seen
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in lines(receive_until(sock, "STOPPING=1"))


def test_without_notify_socket_nothing_breaks() -> None:
    """Without NOTIFY_SOCKET the run works and exits with the app's status."""
    env = child_env()
    assert "NOTIFY_SOCKET" not in env
    app = python_app("print('ok'); raise SystemExit(3)")
    result = run_sidecar(["--admin", "off", "--start-seconds", "0", "--", *app], env=env)
    assert result.returncode == 3
    assert result.stdout == b"ok\n"
    assert result.stderr == b""


def test_unreachable_notify_socket_is_harmless(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET nobody listens on does not break the run."""
    env = child_env(NOTIFY_SOCKET=str(tmp_path / "nobody.sock"))
    app = python_app("raise SystemExit(2)")
    result = run_sidecar(["--admin", "off", "--start-seconds", "0", "--", *app], env=env)
    assert result.returncode == 2
    assert result.stderr == b""


def test_notify_disabled_in_config_sends_nothing(tmp_path: Path) -> None:
    """notify = false (SIDECAR_NOTIFY=false) sends no datagram even with NOTIFY_SOCKET set."""
    path = str(tmp_path / "notify.sock")
    with notify_socket(path) as sock:
        env = child_env(NOTIFY_SOCKET=path, SIDECAR_NOTIFY="false")
        app = python_app("raise SystemExit(0)")
        result = run_sidecar(["--admin", "off", "--start-seconds", "0", "--", *app], env=env)
        assert result.returncode == 0
        assert receive(sock, 0.2) is None
