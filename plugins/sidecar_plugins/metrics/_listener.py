"""A listener of the metrics plugin's own, for ``plugins.metrics.listen``.

Serves ``GET``/``HEAD`` on the metrics path and nothing else, so ``/metrics`` can be exposed on
an address where the admin listener's other routes are not (say ``0.0.0.0:9100`` for
Prometheus, with the admin listener on loopback). A busy address is a start-up error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sidecar_runtime import Address, PluginError, Request, Response

from .._site import ListenError, core_request, reply
from .._site import serve as serve_site

if TYPE_CHECKING:
    from aiohttp import web

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
        return await reply(request, await handler(core_request(request)))

    try:
        async with serve_site(address, dispatch) as bound:
            yield bound
    except ListenError as err:
        msg = f"plugins.metrics.listen: cannot listen on {address}: {err.strerror}"
        raise PluginError(msg) from None
