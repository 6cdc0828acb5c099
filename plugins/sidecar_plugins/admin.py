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
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from sidecar_runtime import PluginContext, PluginError, parse_address

from ._site import ListenError, core_request, reply, serve

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


class AdminPlugin:
    """Serves the runtime's route table."""

    Config = AdminConfig

    def __init__(self, config: AdminConfig, /) -> None:
        self.config = config

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        configured = self.config.listen is not None
        address = parse_address(self.config.listen or DEFAULT_LISTEN)
        dispatch = self._dispatcher(ctx)
        limit = self.config.max_body_bytes
        try:
            async with serve(address, dispatch, client_max_size=limit) as bound:
                ctx.set_info(listen=bound)
                ctx.log.info("admin_listening", address=bound)
                task_status.started()
                await anyio.sleep_forever()
        except ListenError as err:
            if configured or err.errno != errno.EADDRINUSE:
                msg = f"plugins.admin.listen: cannot listen on {address}: {err.strerror}"
                raise PluginError(msg) from None
            busy = err.strerror
        ctx.log.warning(
            "admin_listen_skipped",
            address=str(address),
            error=busy,
            hint="set plugins.admin.listen or --admin to use another address",
        )
        ctx.set_info(listen=None)
        task_status.started()
        await anyio.sleep_forever()

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
            try:
                response = await route.handler(core_request(request, await request.read()))
            except Exception as err:
                ctx.log.error("route_failed", path=request.path, owner=route.owner, exc_info=err)
                return web.Response(status=500, text="internal error\n")
            return await reply(request, response)

        return dispatch
