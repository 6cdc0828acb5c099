"""Upgrade passthrough (WebSocket and friends): after a ``101`` the connection is a byte tunnel.

The upstream's ``101 Switching Protocols`` head goes to the client with its ``Upgrade`` and
``Connection`` headers kept; from then on bytes are copied both ways as they arrive, with the
same back-pressure as bodies (a slow reader pauses the other side). The tunnel ends when either
side closes, or after ``timeouts.tunnel_idle`` without a byte in either direction.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ._timer import LazyTimer

if TYPE_CHECKING:
    from ._server import Connection, Request
    from ._upstream import UpstreamConnection

__all__ = ["tunnel"]

_DROPPED = frozenset(
    (b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"content-length")
)


class _Tunnel:
    """Copies bytes between the two connections and notices the end."""

    __slots__ = ("_done", "_idle", "_loop", "client", "last", "timer", "upstream")

    def __init__(self, client: Connection, upstream: UpstreamConnection, idle: float) -> None:
        self.client = client
        self.upstream = upstream
        self._loop = client.loop
        self._idle = idle
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.last = time.monotonic()
        self.timer = LazyTimer(self._loop, self._on_timer)
        if idle:
            self.timer.set(self.last + idle)

    def to_upstream(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.upstream.send_body(data)

    def to_client(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.client.write(data)

    def finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _on_timer(self) -> None:
        deadline = self.last + self._idle
        if time.monotonic() >= deadline:
            self.finish()
        else:
            self.timer.set(deadline)

    async def wait(self) -> None:
        try:
            await self._done
        finally:
            self.timer.cancel()


async def tunnel(
    client: Connection, upstream: UpstreamConnection, req: Request, idle_timeout: float
) -> None:
    """Send the 101 head, copy bytes both ways until one side is done, then close both."""
    parts = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    parts += [
        b"%s: %s\r\n" % (name, value)
        for name, value in upstream.headers
        if name.lower() not in _DROPPED
    ]
    parts.append(b"\r\n")
    client.write(b"".join(parts))
    pipe = _Tunnel(client, upstream, idle_timeout)
    client.tunnel = pipe.to_upstream
    upstream.tunnel = pipe.to_client
    client.on_lost = pipe.finish
    upstream.on_close = pipe.finish
    if upstream.upgrade_rest:
        client.write(upstream.upgrade_rest)
        upstream.upgrade_rest = b""
    early = client.take_upgrade_bytes()
    if early:
        upstream.send_body(early)
    client.resume_reading_for("upgrade")
    if client.closed or upstream.closed:
        pipe.finish()
    try:
        await pipe.wait()
    finally:
        client.tunnel = None
        upstream.tunnel = None
        client.close()
        upstream.release()
