"""Real targets for probes: an HTTP(S) server and a TCP listener on 127.0.0.1 that tests can
make slow, failing, flapping or huge while they run; and a plugin that hands out its context."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import anyio
import msgspec
from aiohttp import web
from anyio.abc import SocketStream, TaskStatus

from sidecar_runtime import PluginContext
from tests.conftest import free_port


class HttpTarget:
    """What the HTTP server answers; change the attributes while it runs."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"all good\n"
        self.delay = 0.0
        self.endless = False  # stream a body that never ends
        self.flap = False  # alternate 200 and 503, starting with 200
        self.location: str | None = None
        self.hits = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self.sent_bytes = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.requests.append((request.method, request.path, dict(request.headers)))
        if self.delay:
            await anyio.sleep(self.delay)
        headers = {"Location": self.location} if self.location else None
        status = (200 if self.hits % 2 else 503) if self.flap else self.status
        if not self.endless:
            return web.Response(status=status, body=self.body, headers=headers)
        response = web.StreamResponse(status=self.status)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:  # until the client goes away
                await response.write(chunk)
                self.sent_bytes += len(chunk)
        except ConnectionError:
            return response


@asynccontextmanager
async def http_target(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[HttpTarget]:
    """An aiohttp server on 127.0.0.1 (port 0) serving :class:`HttpTarget` on every path."""
    target = HttpTarget()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server: Any = site._server  # aiohttp keeps the asyncio server here
        target.port = server.sockets[0].getsockname()[1]
        yield target
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


class TcpTarget:
    """A TCP listener on a fixed 127.0.0.1 port that can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._scope: anyio.CancelScope | None = None
        self._tg: Any = None

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)

        async def handle(stream: SocketStream) -> None:
            self.accepted += 1
            await stream.aclose()

        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started()
            async with listener:
                await listener.serve(handle)

    async def up(self) -> None:
        await self._tg.start(self._serve)

    def down(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


@asynccontextmanager
async def tcp_target() -> AsyncIterator[TcpTarget]:
    target = TcpTarget()
    async with anyio.create_task_group() as tg:
        target._tg = tg
        await target.up()
        try:
            yield target
        finally:
            tg.cancel_scope.cancel()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class NoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ContextPlugin:
    """A plugin that only publishes its context, so tests can call ``ctx.spawn``."""

    Config = NoConfig
    contexts: ClassVar[list[PluginContext]] = []

    def __init__(self, config: NoConfig, /) -> None:
        self.config = config

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        ContextPlugin.contexts.append(ctx)
        task_status.started()
        await anyio.sleep_forever()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def reaped(pid: int) -> bool:
    """True once ``pid`` is gone for good: not running and not a zombie."""
    return not os.path.exists(f"/proc/{pid}")


def group_alive(pgid: int) -> bool:
    """True while any process (zombies aside) is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    fields = f.read().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``predicate`` every 5 ms until it is true, failing after ``seconds``."""
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - probe and process state have no change event
            await anyio.sleep(0.005)


def read_pids(path: Path) -> Iterator[int]:
    if path.exists():
        for line in path.read_text().split():
            yield int(line)
