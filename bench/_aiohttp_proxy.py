"""The reference for ``bench/proxy.py``: a minimal reverse proxy in aiohttp.

One ``aiohttp.web`` server and one ``ClientSession`` (keep-alive pool) forwarding every request
to one upstream, streaming both bodies, hop-by-hop headers dropped: what a person would write
with aiohttp in twenty lines. No routing, retries, limits, logs or metrics.

Usage: python bench/_aiohttp_proxy.py LISTEN_PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host")
)


def make_app(upstream: str) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4), auto_decompress=False
        )

    async def stop(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def forward(request: web.Request) -> web.StreamResponse:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = request.content if request.body_exists else None
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            for key, value in upstream_response.headers.items():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    response.headers.add(key, value)
            if upstream_response.content_length is not None:
                response.content_length = upstream_response.content_length
            try:
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # wrk hangs up at the end of a run
                pass
            return response

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
