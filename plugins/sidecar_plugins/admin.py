"""The admin listener: one HTTP server for every plugin's routes (``/status``, ``/metrics``...).

Serves the core's route table over aiohttp on TCP or a unix socket. Routes marked mutating are
POST-only and refused (403) to clients that are not on loopback or the unix socket, unless the
request carries ``Authorization: Bearer <token>`` matching ``plugins.admin.token``. A busy
*default* address (no ``listen`` configured) is a warning and the runtime runs without the
listener; a busy configured address is a start-up error.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import socket
import stat
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from sidecar_runtime import PluginContext, PluginError, Request, parse_address

__all__ = ["DEFAULT_LISTEN", "AdminConfig", "AdminPlugin"]

DEFAULT_LISTEN = "127.0.0.1:9901"


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[plugins.admin]``."""

    listen: str | None = None
    token: str | None = None
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.listen is not None:
            parse_address(self.listen)
        if self.token is not None and len(self.token) < 16:
            msg = "token must be at least 16 characters"
            raise ValueError(msg)
        if self.max_body_bytes < 0:
            msg = f"max_body_bytes must be >= 0, got {self.max_body_bytes}"
            raise ValueError(msg)


def _is_local(remote: str | None) -> bool:
    if not remote:  # unix socket peers: the socket file's permissions are the guard
        return True
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _remove_stale_socket(path: str) -> None:
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


class AdminPlugin:
    """Serves the runtime's route table."""

    Config = AdminConfig

    def __init__(self, config: AdminConfig, /) -> None:
        self.config = config

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        from aiohttp import web

        configured = self.config.listen is not None
        address = parse_address(self.config.listen or DEFAULT_LISTEN)
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._dispatcher(ctx))
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
                if not configured and err.errno == errno.EADDRINUSE:
                    ctx.log.warning(
                        "admin_listen_skipped",
                        address=str(address),
                        error=err.strerror,
                        hint="set plugins.admin.listen or --admin to use another address",
                    )
                    ctx.set_info(listen=None)
                    task_status.started()
                    await anyio.sleep_forever()
                msg = f"plugins.admin.listen: cannot listen on {address}: {err.strerror}"
                raise PluginError(msg) from None
            bound = _bound_address(site, address)
            ctx.set_info(listen=bound)
            ctx.log.info("admin_listening", address=bound)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            if address.kind == "unix":
                _remove_stale_socket(address.path)  # ours, now closed: leave no file behind

    def _dispatcher(self, ctx: PluginContext) -> Any:
        from aiohttp import web

        token = self.config.token

        async def dispatch(request: web.Request) -> web.StreamResponse:
            route, allowed = ctx.routes.resolve(request.method, request.path)
            if route is None:
                if allowed:
                    return web.Response(
                        status=405,
                        text="method not allowed\n",
                        headers={"Allow": ", ".join(allowed)},
                    )
                return web.Response(status=404, text=f"no route for {request.path}\n")
            if route.mutating and not _is_local(request.remote):
                given = request.headers.get("Authorization", "")
                if token is None or not hmac.compare_digest(given, f"Bearer {token}"):
                    return web.Response(status=403, text="forbidden: loopback or token only\n")
            body = await request.read()
            core_request = Request(
                method=request.method,
                path=request.path,
                query={k: v for k, v in request.query.items()},
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                client=request.remote,
            )
            try:
                reply = await route.handler(core_request)
            except Exception as err:
                ctx.log.error("route_failed", path=request.path, owner=route.owner, exc_info=err)
                return web.Response(status=500, text="internal error\n")
            if isinstance(reply.body, bytes | bytearray):
                if request.method == "HEAD":
                    return web.Response(status=reply.status, headers=dict(reply.headers))
                return web.Response(
                    status=reply.status, headers=dict(reply.headers), body=reply.body
                )
            stream = web.StreamResponse(status=reply.status, headers=dict(reply.headers))
            await stream.prepare(request)
            async for chunk in reply.body:
                await stream.write(chunk)
            await stream.write_eof()
            return stream

        return dispatch


def _bound_address(site: Any, requested: Any) -> str:
    if requested.kind == "unix":
        return f"unix:{requested.path}"
    server = site._server  # aiohttp keeps the asyncio server here; the only way to the port
    sock = server.sockets[0]
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
