"""Shared fixtures. Async core tests run under asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: How tests launch the command, as a user would (console script or ``python -m``).
SIDECAR = [sys.executable, "-m", "sidecar_runtime"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core tests run on both backends; plugin tests override this with asyncio only."""
    return str(request.param)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def python_app(code: str) -> list[str]:
    """argv of a tiny fake app running ``code`` (dedented)."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for sidecar-run under test: no NOTIFY_SOCKET, no SIDECAR_* leaks."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIDECAR_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    env.update(extra)
    return env


def run_sidecar(
    args: Sequence[str],
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``sidecar-run ARGS`` to completion and capture its output (bytes)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [*SIDECAR, *args], timeout=timeout, env=env or child_env(), check=False, **kwargs
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile the project once: every test launches fresh interpreters."""
    import compileall

    for name in ("sidecar_runtime", "plugins"):
        compileall.compile_dir(str(ROOT / name), quiet=2)


@contextmanager
def running_sidecar(
    args: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """sidecar-run in the background (output piped); SIGTERM and reap it afterwards."""
    proc = subprocess.Popen(
        [*SIDECAR, *args],
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
