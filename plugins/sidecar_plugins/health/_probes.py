"""The checks behind probes: HTTP(S), TCP connect, exec and "process alive".

A check is an async callable returning an :class:`Outcome`. It never raises for a failing
target (refused, unreachable, DNS, TLS, a bad status, a crashed command): the failure is the
outcome's ``detail``. The prober bounds each call with the probe's timeout by cancelling it, so
every check cleans up on cancellation: an exec probe's whole process group gets SIGKILL and its
exit is awaited (the core reaps it), an HTTP connection is closed, a TCP socket too.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec

from sidecar_runtime import AppHandle, Child, SidecarError, SpawnError, __version__

from ._config import ProbeConfig, parse_status_ranges

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "USER_AGENT",
    "Check",
    "ExecCheck",
    "HttpCheck",
    "Outcome",
    "ProcessCheck",
    "Spawner",
    "TcpCheck",
    "describe_error",
    "http_session",
    "make_check",
]

USER_AGENT = f"sidecar-run-probe/{__version__}"
_DETAIL_CHARS = 200
#: How long a SIGKILLed probe may take to be reaped before the probe gives up waiting.
_KILL_GRACE = 5.0
_SERVICE_MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Outcome(msgspec.Struct, frozen=True):
    """One result of a check: passed or not, and why, in one line."""

    ok: bool
    detail: str


class Check(Protocol):
    def __call__(self) -> Awaitable[Outcome]: ...


Spawner = Callable[..., Child]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


def describe_error(err: BaseException) -> str:
    """An exception as one short line, looking through anyio's wrapped connect errors."""
    cause = err.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[-1]
    if isinstance(err, OSError) and err.strerror is None and isinstance(cause, OSError):
        err = cause
    if isinstance(err, OSError):
        # asyncio says "Connect call failed ('127.0.0.1', 1)"; the errno says what happened
        generic = not err.strerror or err.strerror.startswith("Connect call failed")
        if err.errno is not None and err.errno > 0 and generic:
            return os.strerror(err.errno)
        if err.strerror:
            return _one_line(err.strerror)
    text = str(err)
    if isinstance(err, SidecarError):  # written for people already
        return _one_line(text)
    return _one_line(f"{type(err).__name__}: {text}" if text else type(err).__name__)


def _tail(output: bytes) -> str:
    """The last non-blank line of a command's output."""
    for line in reversed(output.decode(errors="replace").splitlines()):
        if line.strip():
            return _one_line(line)
    return ""


class HttpCheck:
    """GET (or ``method``) the URL; pass on an expected status and, if asked, a body match."""

    def __init__(self, probe: ProbeConfig, session: aiohttp.ClientSession, max_bytes: int) -> None:
        assert probe.http is not None
        self.url = probe.http
        self.method = probe.method
        self.headers = {
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Accept-Encoding": "identity",  # a compressed body is never inflated in memory
            "Connection": "close",
            **probe.headers,
        }
        self.ranges = parse_status_ranges(probe.expect_status)
        self.expect = probe.expect_status
        self.needle = probe.body_contains.encode() if probe.body_contains is not None else None
        self.ssl: bool = probe.tls_verify
        self.session = session
        self.max_bytes = max_bytes

    async def __call__(self) -> Outcome:
        import aiohttp

        try:
            async with self.session.request(
                self.method,
                self.url,
                headers=self.headers,
                allow_redirects=False,
                ssl=self.ssl,
            ) as response:
                status = response.status
                body = await _read_bounded(response.content, self.max_bytes)
        except (aiohttp.ClientError, OSError, ValueError) as err:
            return Outcome(False, describe_error(err))
        if not any(lo <= status <= hi for lo, hi in self.ranges):
            snippet = _tail(body[:_DETAIL_CHARS])
            detail = f"HTTP {status} (expected {self.expect})"
            return Outcome(False, f"{detail}: {snippet}" if snippet else detail)
        if self.needle is not None and self.needle not in body:
            where = f" in its first {len(body)} bytes" if len(body) >= self.max_bytes else ""
            lacks = f"HTTP {status} but the body lacks {self.needle.decode()!r}{where}"
            return Outcome(False, lacks)
        return Outcome(True, f"HTTP {status}")


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of a body; the rest is never read (the connection closes)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


class TcpCheck:
    """Pass when a TCP connection to ``HOST:PORT`` opens; it is closed at once."""

    def __init__(self, address: str) -> None:
        from sidecar_runtime import parse_address

        parsed = parse_address(address.removeprefix("tcp://"))
        self.host, self.port = parsed.host, parsed.port

    async def __call__(self) -> Outcome:
        try:
            stream = await anyio.connect_tcp(self.host, self.port)
        except OSError as err:
            return Outcome(False, f"connect to {self.host}:{self.port}: {describe_error(err)}")
        await stream.aclose()
        return Outcome(True, f"connected to {self.host}:{self.port}")


class ExecCheck:
    """Run a command through the core's spawn API; pass when it exits 0.

    The command runs in its own process group with stdin from ``/dev/null`` and its output in
    a pipe that is drained (at most ``max_bytes`` kept, for the failure detail). When it ends,
    or when the probe is cancelled at its timeout, the whole group gets SIGKILL, so neither a
    hung command nor anything it forked outlives the probe; the core reaps the command.
    """

    def __init__(self, argv: list[str], spawn: Spawner, max_bytes: int) -> None:
        self.argv = list(argv)
        self.spawn = spawn
        self.max_bytes = max_bytes
        # the runtime's environment, minus what makes a process systemd's notifier
        self.env = {k: v for k, v in os.environ.items() if k not in _SERVICE_MANAGER_VARS}

    async def __call__(self) -> Outcome:
        read_fd, write_fd = os.pipe()
        try:
            return await self._run(read_fd, write_fd)
        finally:
            os.close(read_fd)

    async def _run(self, read_fd: int, write_fd: int) -> Outcome:
        try:
            os.set_blocking(read_fd, False)
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                child = self.spawn(
                    self.argv, env=self.env, stdin=null, stdout=write_fd, stderr=write_fd
                )
            finally:
                os.close(null)
        except (SpawnError, OSError) as err:
            return Outcome(False, f"exec: {describe_error(err)}")
        finally:
            os.close(write_fd)
        output = bytearray()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain, read_fd, output)
                status = await child.wait()
                tg.cancel_scope.cancel()  # a forked descendant may hold the pipe open
            self._read_available(read_fd, output)
        finally:
            # The group, at its timeout and after its exit: nothing the probe started survives.
            child.send_signal(signal.SIGKILL, group=True)
            if child.running:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_GRACE):
                    await child.wait()
        tail = _tail(bytes(output))
        if status.code == 0:
            return Outcome(True, "exit 0")
        how = (
            f"exit {status.code}"
            if status.signal is None
            else f"killed by SIG{signal.Signals(status.signal).name.removeprefix('SIG')}"
        )
        return Outcome(False, f"{how}: {tail}" if tail else how)

    async def _drain(self, fd: int, output: bytearray) -> None:
        while True:
            await anyio.wait_readable(fd)
            if not self._read_available(fd, output):
                return

    def _read_available(self, fd: int, output: bytearray) -> bool:
        """Read what the pipe holds now; False at end of file."""
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            room = self.max_bytes - len(output)
            if room > 0:
                output += data[:room]


class ProcessCheck:
    """Pass while the app has a process that is neither a zombie nor stopped."""

    def __init__(self, app: AppHandle) -> None:
        self.app = app

    async def __call__(self) -> Outcome:
        import psutil

        process = self.app.process()
        if process is None:
            return Outcome(False, f"the app has no process ({self.app.state.value})")
        try:
            status = process.status()
        except psutil.Error as err:
            return Outcome(False, f"process {process.pid}: {describe_error(err)}")
        if status in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
        ):
            return Outcome(False, f"process {process.pid} is {status}")
        return Outcome(True, f"process {process.pid} is {status}")


def make_check(
    probe: ProbeConfig,
    *,
    app: AppHandle,
    spawn: Spawner,
    session: Any,
    max_bytes: int,
) -> Check:
    """The check for ``probe``'s target. ``session`` (aiohttp) is needed for http probes only."""
    if probe.http is not None:
        assert session is not None
        return HttpCheck(probe, session, max_bytes)
    if probe.tcp is not None:
        return TcpCheck(probe.tcp)
    if probe.exec is not None:
        return ExecCheck(probe.exec, spawn, max_bytes)
    return ProcessCheck(app)


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp client for every HTTP probe of a run of the plugin.

    A new connection per check (``force_close``), as the kubelet does, so that a probe also
    tests that the app still accepts connections; no proxy from the environment; bodies are
    never decompressed; the timeout is the probe's own (the caller cancels).
    """
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        trust_env=False,
    )
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):
            await session.close()
