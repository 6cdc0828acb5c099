"""A listener of the metrics plugin's own, for ``plugins.metrics.listen``.

Serves ``GET``/``HEAD`` on the metrics path and nothing else, so ``/metrics`` can be exposed on
an address where the admin listener's other routes are not (say ``0.0.0.0:9100`` for
Prometheus, with the admin listener on loopback). A busy address is a start-up error.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from sidecar_runtime import Address, PluginError, Request, Response

__all__ = ["serve"]

Handler = Callable[[Request], Awaitable[Response]]


@asynccontextmanager
async def serve(address: Address, path: str, handler: Handler) -> AsyncIterator[str]:
    """Listen on ``address`` and serve ``handler`` at ``path``; yield the bound address."""
    from aiohttp import web

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if request.path != path:
            return web.Response(status=404, text=f"no route for {request.path}\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET"})
        reply = await handler(
            Request(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                client=request.remote,
            )
        )
        body = reply.body if isinstance(reply.body, bytes) else b""
        if request.method == "HEAD":
            body = b""
        return web.Response(status=reply.status, headers=dict(reply.headers), body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site: web.BaseSite
        if address.kind == "unix":
            _remove_stale_socket(address.path)
            site = web.UnixSite(runner, address.path)
        else:
            site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            msg = f"plugins.metrics.listen: cannot listen on {address}: {err.strerror}"
            raise PluginError(msg) from None
        yield _bound(site, address)
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
        if address.kind == "unix":
            _remove_stale_socket(address.path)  # ours, now closed: leave no file behind


def _remove_stale_socket(path: str) -> None:
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
        os.unlink(path)
    finally:
        probe.close()


def _bound(site: Any, address: Address) -> str:
    if address.kind == "unix":
        return f"unix:{address.path}"
    sock = site._server.sockets[
        0
    ]  # aiohttp keeps the asyncio server here; the only way to the port
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
