"""Serving the core's HTTP types over aiohttp, for the built-in plugins that listen.

Not a plugin (plugins never import each other): the admin listener and the metrics plugin's own
listener both run an aiohttp site on a TCP ``host:port`` or a unix socket through
:func:`serve`, and translate between aiohttp and the core's :class:`Request`/:class:`Response`
with :func:`core_request` and :func:`reply`.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from sidecar_runtime import Address, Request, Response

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["ListenError", "core_request", "remove_stale_socket", "reply", "serve"]


class ListenError(OSError):
    """Raised by :func:`serve` when the address cannot be bound (``errno`` as the OS gave)."""


@asynccontextmanager
async def serve(
    address: Address,
    dispatch: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    client_max_size: int = 1 << 20,
) -> AsyncIterator[str]:
    """Listen on ``address`` with ``dispatch`` for every path; yield the bound address.

    Raises :class:`ListenError` when the address cannot be bound; errors from the caller's body
    pass through as they are. On exit the site is closed and a unix socket file is removed.
    """
    from aiohttp import web

    app = web.Application(client_max_size=client_max_size)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site: web.BaseSite
        if address.kind == "unix":
            remove_stale_socket(address.path)
            site = web.UnixSite(runner, address.path)
        else:
            site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            raise ListenError(err.errno, err.strerror) from err
        yield _bound(site, address)
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
        if address.kind == "unix":
            remove_stale_socket(address.path)  # ours, now closed: leave no file behind


def core_request(request: web.Request, body: bytes = b"") -> Request:
    """The core's view of an aiohttp request (header names lower case)."""
    return Request(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        client=request.remote,
    )


async def reply(request: web.Request, response: Response) -> web.StreamResponse:
    """An aiohttp response for the core's ``response``: bytes, or streamed chunks."""
    from aiohttp import web

    headers = dict(response.headers)
    if isinstance(response.body, bytes | bytearray):
        body = b"" if request.method == "HEAD" else bytes(response.body)
        return web.Response(status=response.status, headers=headers, body=body)
    stream = web.StreamResponse(status=response.status, headers=headers)
    await stream.prepare(request)
    async for chunk in response.body:
        await stream.write(chunk)
    await stream.write_eof()
    return stream


def remove_stale_socket(path: str) -> None:
    """Remove a unix socket file nobody listens on; leave anything else alone."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover of an earlier run
    finally:
        probe.close()


def _bound(site: Any, address: Address) -> str:
    if address.kind == "unix":
        return f"unix:{address.path}"
    sock = site._server.sockets[0]  # aiohttp keeps the asyncio server here: the only way to it
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
