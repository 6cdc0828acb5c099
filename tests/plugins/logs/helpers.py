"""Test doubles shared by the logs plugin's tests: a recording logger, a settable clock, and
running a block as ``nobody`` so file permissions apply to a root test run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

IS_ROOT = os.geteuid() == 0


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block with the effective uid/gid of ``nobody`` (root only), so permissions bite."""
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


class RecordingLog:
    """A structlog-like logger that keeps the events it is given: (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **_: Any) -> RecordingLog:
        return self

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return log

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every ``event``."""
        return [fields for _, name, fields in self.events if name == event]

    def names(self) -> list[str]:
        """Every event's name, in order."""
        return [event for _, event, _ in self.events]


class Clock:
    """A settable clock: call it for the time, set ``now`` to move it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
