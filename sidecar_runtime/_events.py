"""Events the core publishes, and bounded per-subscriber delivery.

Events are frozen classes. Each subscriber gets its own bounded channel; publishing never waits
on a subscriber unless it asked for ``overflow="block"``. A full ``drop`` subscriber loses the
newest event and its ``dropped`` count grows; nothing is lost silently. There is no module-global
bus: each runtime owns its hubs.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Generic, Literal, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._state import AppState

__all__ = [
    "AppExited",
    "AppStarted",
    "Event",
    "Hub",
    "OutputLine",
    "ShutdownStarted",
    "StateChanged",
    "Subscription",
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of lifecycle events; ``at`` is wall-clock time (``time.time()``)."""

    at: float = msgspec.field(default_factory=time.time)


class StateChanged(Event, frozen=True):
    """The app moved from ``old`` to ``new`` for ``reason``."""

    old: AppState
    new: AppState
    reason: str
    pid: int | None = None


class AppStarted(Event, frozen=True):
    """A process of the app was spawned (``start`` counts from 1)."""

    pid: int
    start: int


class AppExited(Event, frozen=True):
    """A process of the app ended; exactly one of ``code`` and ``signal`` is set."""

    pid: int
    code: int | None
    signal: int | None
    ran_for: float


class ShutdownStarted(Event, frozen=True):
    """The runtime began its graceful shutdown."""

    reason: str


class OutputLine(msgspec.Struct, frozen=True):
    """One line of the app's output, without its newline.

    ``stream`` is ``"stdout"`` or ``"stderr"`` (``"stdout"`` for both when they share one
    channel because the runtime's stdout and stderr are the same file). ``partial`` marks a line
    cut at ``output.max_line_bytes`` or ended by EOF without a newline; the rest follows as more
    events.
    """

    stream: str
    data: bytes
    pid: int
    partial: bool = False
    at: float = msgspec.field(default_factory=time.time)


T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's bounded view of a hub. Iterate it; close it when done."""

    def __init__(
        self,
        hub: Hub[T],
        send: MemoryObjectSendStream[T],
        receive: MemoryObjectReceiveStream[T],
        overflow: Literal["drop", "block"],
    ) -> None:
        self._hub = hub
        self._send = send
        self._receive = receive
        self.overflow = overflow
        self.dropped = 0

    def __aiter__(self) -> AsyncIterator[T]:
        return self._receive.__aiter__()

    async def receive(self) -> T:
        """Next item; raises ``anyio.EndOfStream`` once the hub closed and all was read."""
        return await self._receive.receive()

    def receive_nowait(self) -> T:
        """Next item if one is buffered; raises ``anyio.WouldBlock`` otherwise, and
        ``anyio.EndOfStream`` once the hub closed and all was read. For batching consumers."""
        return self._receive.receive_nowait()

    def close(self) -> None:
        """Stop receiving. The hub forgets this subscriber."""
        self._hub._remove(self)
        self._send.close()
        self._receive.close()


class Hub(Generic[T]):
    """Broadcasts items to every subscription."""

    def __init__(self) -> None:
        self._subs: list[Subscription[T]] = []
        self._closed = False
        self._ended: list[Subscription[T]] = []  # block subscribers at close()
        self.dropped = 0  # over all subscribers, ever

    def subscribe(
        self, max_buffer: int = 1024, overflow: Literal["drop", "block"] = "drop"
    ) -> Subscription[T]:
        """Subscribe with a buffer of ``max_buffer`` items (``math.inf`` allowed)."""
        send, receive = anyio.create_memory_object_stream[T](
            max_buffer_size=max_buffer if max_buffer > 0 else math.inf
        )
        sub = Subscription(self, send, receive, overflow)
        if self._closed:
            send.close()
        else:
            self._subs.append(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def has_blocking_subscribers(self) -> bool:
        return any(s.overflow == "block" for s in self._subs)

    def publish_nowait(self, item: T) -> None:
        """Deliver to every subscriber without waiting; full ``block`` ones count a drop too."""
        for sub in tuple(self._subs):
            try:
                sub._send.send_nowait(item)
            except anyio.WouldBlock:
                sub.dropped += 1
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._remove(sub)

    async def publish(self, item: T) -> None:
        """Deliver; wait for room only at subscribers that chose ``overflow="block"``."""
        for sub in tuple(self._subs):
            try:
                try:
                    sub._send.send_nowait(item)  # no trip through the event loop when there is room
                except anyio.WouldBlock:
                    if sub.overflow != "block":
                        raise
                    await sub._send.send(item)
            except anyio.WouldBlock:
                sub.dropped += 1
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._remove(sub)

    def close(self) -> None:
        """End every subscription: readers get what is buffered, then the end."""
        self._closed = True
        for sub in self._subs:
            sub._send.close()
        self._ended = [s for s in self._subs if s.overflow == "block"]
        self._subs.clear()

    async def wait_read(self) -> None:
        """After :meth:`close`: return once every ``block`` subscriber has read what was
        buffered for it (or closed its subscription). Bound it with a cancel scope."""
        for sub in self._ended:
            receive = sub._receive
            while True:
                try:
                    if not receive.statistics().current_buffer_used:
                        break
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                await anyio.sleep(0.005)

    def _remove(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
