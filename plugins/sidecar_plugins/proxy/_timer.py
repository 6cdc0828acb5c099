"""A deadline that is cheap to move: one loop timer per connection, re-armed lazily.

Connections move their deadline on every request (header read, keep-alive idle, response
timeouts). Cancelling and scheduling an asyncio timer each time costs a heap operation; here
moving the deadline is an attribute store, and the timer, when it fires early, re-arms itself
for the current deadline. It fires at most once per timeout period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LazyTimer"]


class LazyTimer:
    """Calls ``callback()`` once the loop time passes ``deadline`` (None: disarmed)."""

    __slots__ = ("_callback", "_handle", "_loop", "_when", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0
        self.deadline: float | None = None

    def set(self, deadline: float | None) -> None:
        """Move the deadline (loop time); an earlier one than the armed timer re-arms it."""
        self.deadline = deadline
        if deadline is None:
            return
        handle = self._handle
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)
            self._when = deadline
        elif deadline < self._when:
            handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)
            self._when = deadline

    def cancel(self) -> None:
        self.deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self.deadline
        if deadline is None:
            return
        if self._loop.time() + 0.001 < deadline:  # early by more than the clock's slack
            self._handle = self._loop.call_at(deadline, self._fire)
            self._when = deadline
            return
        self.deadline = None
        self._callback()
