"""One readiness truth: the app is ready when it runs and every registered check passes.

The core owns the ``app`` check (true while the app is RUNNING). Plugins add their own (the
health plugin's readiness probe); a check registered as failing holds readiness back until it
passes. Shutdown turns readiness false first, for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import msgspec

__all__ = ["CheckResult", "Readiness"]


class CheckResult(msgspec.Struct, frozen=True):
    """The last result of one readiness check."""

    ok: bool
    detail: str = ""
    at: float = 0.0


class Readiness:
    """The readiness board shared by the core and every plugin."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckResult] = {}
        self._shutting_down = False
        self._changed = anyio.Event()
        self._listeners: list[Callable[[bool], None]] = []
        self._ready = False
        self.ever_ready = False
        self.ready_since: float | None = None  # wall clock

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def checks(self) -> dict[str, CheckResult]:
        """A snapshot of every check."""
        return dict(self._checks)

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Record the result of check ``name`` (creating it)."""
        self._checks[name] = CheckResult(ok, detail, time.time())
        self._update()

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)
        self._update()

    def begin_shutdown(self) -> None:
        """Readiness is false from now on."""
        self._shutting_down = True
        self._update()

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` on every change of the overall readiness."""
        self._listeners.append(listener)

    async def wait_ready(self) -> None:
        while not self._ready:
            await self._changed.wait()

    async def wait_changed(self) -> bool:
        """Wait for the next change of the overall readiness; return the new value."""
        await self._changed.wait()
        return self._ready

    def _update(self) -> None:
        ready = (
            not self._shutting_down
            and bool(self._checks)
            and all(c.ok for c in self._checks.values())
        )
        if ready == self._ready:
            return
        self._ready = ready
        self.ever_ready = self.ever_ready or ready
        if ready:
            self.ready_since = time.time()
        else:
            self.ready_since = None
        event, self._changed = self._changed, anyio.Event()
        event.set()
        for listener in tuple(self._listeners):
            listener(ready)
