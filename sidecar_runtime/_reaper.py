"""The reaper: the one place that calls ``waitpid``.

It owns SIGCHLD. On every SIGCHLD it reaps every exited child with ``waitpid(-1, WNOHANG)``:
a pid that was spawned through the spawn API gets its status delivered to its waiter; any other
pid is an orphan that was re-parented to us (we are PID 1 or a child subreaper) and is counted.
Because nothing else in the process waits for children, no status is ever lost or stolen.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable

import anyio
import msgspec
from anyio.abc import TaskStatus

from ._restart import ExitStatus
from ._spawn import SpawnRequest, spawn

__all__ = ["Child", "Reaper", "set_child_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux ``prctl``). True on success."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except AttributeError:
        return False


class Child(msgspec.Struct, eq=False):
    """A process started through the spawn API. Its pid is also its process group id."""

    pid: int
    argv: tuple[str, ...]
    started_at: float = msgspec.field(default_factory=time.monotonic)
    status: ExitStatus | None = None
    exited_at: float | None = None
    _exited: anyio.Event = msgspec.field(default_factory=anyio.Event)

    @property
    def running(self) -> bool:
        return self.status is None

    def send_signal(self, sig: int, *, group: bool = False) -> bool:
        """Signal the process (or its whole group). False when there is nothing left to signal."""
        try:
            if group:
                os.killpg(self.pid, sig)
            elif self.status is None:
                os.kill(self.pid, sig)
            else:
                return False
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    async def wait(self) -> ExitStatus:
        """Wait until the process has exited and been reaped; return how it ended."""
        await self._exited.wait()
        assert self.status is not None
        return self.status

    def _set_exited(self, status: ExitStatus) -> None:
        self.status = status
        self.exited_at = time.monotonic()
        self._exited.set()


class Reaper:
    """Owns SIGCHLD and ``waitpid``; hands out :class:`Child` handles through :meth:`spawn`."""

    def __init__(self, *, on_orphan: Callable[[int, ExitStatus], None] | None = None) -> None:
        self._children: dict[int, Child] = {}
        self._on_orphan = on_orphan
        self.orphans_reaped = 0
        self._running = False

    def spawn(self, request: SpawnRequest) -> Child:
        """Start a process (see :func:`spawn`) and track it. Raises :class:`SpawnError`."""
        if not self._running:
            msg = "the reaper is not running: start Reaper.run in a task group first"
            raise RuntimeError(msg)
        pid = spawn(request)
        child = Child(pid=pid, argv=tuple(request.argv))
        self._children[pid] = child
        return child

    def reap(self) -> None:
        """Reap every exited child now. Called on SIGCHLD; safe to call any time."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:  # pragma: no cover - PEP 475 retries this
                continue
            if pid == 0:
                return
            exit_status = ExitStatus.from_wait_status(status)
            child = self._children.pop(pid, None)
            if child is not None:
                child._set_exited(exit_status)
            else:
                self.orphans_reaped += 1
                if self._on_orphan is not None:
                    self._on_orphan(pid, exit_status)

    async def run(
        self,
        *,
        own_sigchld: bool = True,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handle SIGCHLD until cancelled. Ready (``started``) once the handler is installed.

        ``own_sigchld=False``: the caller installs the SIGCHLD handler and calls :meth:`reap`
        on every SIGCHLD (the runtime's signal task does).
        """
        if not own_sigchld:
            self._running = True
            try:
                self.reap()
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._running = False
        with anyio.open_signal_receiver(signal.SIGCHLD) as signals:
            self._running = True
            try:
                self.reap()  # anything that exited before the handler was in place
                task_status.started()
                async for _ in signals:
                    self.reap()
            finally:
                self._running = False
