"""Helpers for the proxy tests: the plugin on a real core, real upstream servers, raw clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from aiohttp import web
from sidecar_plugins.proxy import ProxyPlugin

from sidecar_runtime.testing import PluginHarness, plugin_harness

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Proxy:
    """A running proxy plugin: its harness, its first listener's URL, host and port."""

    def __init__(self, harness: PluginHarness) -> None:
        self.harness = harness
        address = harness.info["listeners"][0]
        self.address = address
        if address.startswith("unix:"):
            self.host, self.port = "", 0
            self.url = "http://localhost"
        else:
            host, _, port = address.rpartition(":")
            self.host, self.port = host, int(port)
            self.url = f"http://{address}"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample's value from the shared registry (None when absent)."""
        value: float | None = self.harness.metrics.get_sample_value(name, labels or {})
        return value


def config(port: int | str, **extra: Any) -> dict[str, Any]:
    """A proxy on 127.0.0.1:0 in front of one upstream (not the supervised app: no holding)."""
    endpoint = port if isinstance(port, str) else f"127.0.0.1:{port}"
    table: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "upstreams": {"app": {"endpoints": [endpoint], "app": False}},
    }
    table.update(extra)
    return table


@asynccontextmanager
async def running_proxy(table: dict[str, Any], **harness: Any) -> AsyncIterator[Proxy]:
    async with plugin_harness(ProxyPlugin, table, name="proxy", **harness) as h:
        yield Proxy(h)


@asynccontextmanager
async def aiohttp_upstream(
    handler: Handler, *, path: str = "/{tail:.*}", method: str = "*"
) -> AsyncIterator[int]:
    """An aiohttp app on 127.0.0.1 (a port of its own) answering every path with ``handler``."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_upstream(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A raw asyncio server: ``handle(reader, writer)`` per connection (closed afterwards)."""

    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for writer in list(writers):
            writer.transport.abort()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """One request or response head, up to and including the blank line."""
    return await reader.readuntil(b"\r\n\r\n")


async def exchange(port: int, data: bytes, *, within: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (bounded in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        with anyio.fail_after(within):
            return await reader.read(-1)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    """The status code of a raw response."""
    return int(response.split(b" ", 2)[1])
