"""Holding requests for the app: a gate that is open while the app is ready.

Requests for the app wait at the :class:`Gate` (up to ``hold_timeout``) while it is not ready,
and are let through as soon as a readiness change opens it; the plugin calls
:meth:`Gate.update` on every readiness or state change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Gate"]


class Gate:
    """Open while the app is ready (or shutting down: in-flight work is then let through)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, is_open: Callable[[], bool]) -> None:
        self._loop = loop
        self._is_open = is_open
        self._waiters: list[asyncio.Future[None]] = []
        self.open = is_open()

    def update(self) -> None:
        """Re-read the readiness; wake held requests when it opened."""
        self.open = self._is_open()
        if self.open:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the gate to open; True if it is open."""
        if self.open:
            return True
        if seconds <= 0:
            return False
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        handle = self._loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
        return self.open


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
