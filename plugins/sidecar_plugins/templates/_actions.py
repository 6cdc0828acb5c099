"""What happens when a rendered file changed: signal the app, run a command, or restart the app.

Actions of the templates that changed in one debounce window are grouped: each distinct action
runs once, in config order (``signal HUP`` for three changed files is one SIGHUP). A restart
makes signals to the app pointless (the new process reads the new files), so signals are then
skipped. Commands run through the core's spawn API, in their own process group, with stdin from
``/dev/null`` and their output captured (the last line goes into the log); at the timeout, and
when the command ends, the whole group gets SIGKILL and the core reaps it: no hook outlives its
run and none becomes a zombie.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import anyio

from sidecar_runtime import AppHandle, Child, SpawnError

from ._config import ActionConfig

__all__ = ["ActionGroup", "Outcome", "group_actions", "run_action", "run_exec"]

Result = Literal["success", "failure", "skipped"]
Spawner = Callable[..., Child]
#: How long a SIGKILLed command may take to be reaped before the action stops waiting.
_KILL_GRACE = 5.0
_DETAIL_CHARS = 200
_KEEP_BYTES = 8192
_SERVICE_MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Outcome(NamedTuple):
    """How one action went: ``success``, ``failure`` or ``skipped``, and why in one line."""

    result: Result
    detail: str


class ActionGroup(NamedTuple):
    """One distinct action and the templates (labels) whose change asked for it."""

    action: ActionConfig
    templates: tuple[str, ...]


def _key(action: ActionConfig) -> tuple[object, ...]:
    if action.signal is not None:
        return ("signal", int(action.signal))
    if action.exec is not None:
        return ("exec", tuple(action.exec), float(action.timeout))
    return ("restart",)


def group_actions(
    changed: Sequence[tuple[str, ActionConfig]],
) -> tuple[list[ActionGroup], list[ActionGroup]]:
    """Distinct actions in order of first appearance: ``(to run, skipped because of a
    restart)``. ``changed`` holds ``(template label, its on_change)`` per changed template."""
    order: dict[tuple[object, ...], ActionGroup] = {}
    for label, action in changed:
        key = _key(action)
        group = order.get(key)
        order[key] = ActionGroup(action, (*group.templates, label) if group else (label,))
    groups = list(order.values())
    if any(g.action.restart for g in groups):
        return (
            [g for g in groups if g.action.signal is None],
            [g for g in groups if g.action.signal is not None],
        )
    return groups, []


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


def _tail(output: bytes) -> str:
    for line in reversed(output.decode(errors="replace").splitlines()):
        if line.strip():
            return _one_line(line)
    return ""


async def run_action(
    action: ActionConfig, *, app: AppHandle, spawn: Spawner, reason: str
) -> Outcome:
    """Run one action now. ``reason`` goes with a restart request (e.g. which files changed)."""
    if action.signal is not None:
        pid = app.pid
        if pid is None or not app.send_signal(int(action.signal)):
            return Outcome("skipped", f"the app is not running ({app.state.value})")
        return Outcome("success", f"sent SIG{action.signal.name} to pid {pid}")
    if action.exec is not None:
        return await run_exec(action.exec, spawn, time_limit=action.timeout)
    if not app.request_restart(reason):
        state = app.state.value
        return Outcome("skipped", f"the app is not running or is already restarting ({state})")
    return Outcome("success", "restart requested")


async def run_exec(argv: Sequence[str], spawn: Spawner, *, time_limit: float) -> Outcome:
    """Run ``argv`` to its end or for ``time_limit`` seconds; success on exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_MANAGER_VARS}
    read_fd, write_fd = os.pipe()
    try:
        try:
            os.set_blocking(read_fd, False)
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                child = spawn(list(argv), env=env, stdin=null, stdout=write_fd, stderr=write_fd)
            finally:
                os.close(null)
        except (SpawnError, OSError) as err:
            text = str(err) if isinstance(err, SpawnError) else (err.strerror or str(err))
            return Outcome("failure", _one_line(text))
        finally:
            os.close(write_fd)
        return await _wait(child, read_fd, time_limit)
    finally:
        os.close(read_fd)


async def _wait(child: Child, read_fd: int, time_limit: float) -> Outcome:
    output = bytearray()
    status = None
    try:
        with anyio.move_on_after(time_limit):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_drain, read_fd, output)
                status = await child.wait()
                tg.cancel_scope.cancel()  # a forked descendant may hold the pipe open
        _read_available(read_fd, output)
    finally:
        child.send_signal(signal.SIGKILL, group=True)
        if child.running:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_GRACE):
                await child.wait()
    tail = _tail(bytes(output))
    if status is None:
        how = f"timed out after {time_limit:g}s; its process group was killed"
        return Outcome("failure", f"{how}: {tail}" if tail else how)
    if status.code == 0:
        return Outcome("success", f"exit 0: {tail}" if tail else "exit 0")
    how = (
        f"exit {status.code}"
        if status.signal is None
        else f"killed by SIG{signal.Signals(status.signal).name.removeprefix('SIG')}"
    )
    return Outcome("failure", f"{how}: {tail}" if tail else how)


async def _drain(fd: int, output: bytearray) -> None:
    while True:
        await anyio.wait_readable(fd)
        if not _read_available(fd, output):
            return


def _read_available(fd: int, output: bytearray) -> bool:
    """Read what the pipe holds now, keeping the last bytes; False at end of file."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        output += data
        if len(output) > _KEEP_BYTES:
            del output[: len(output) - _KEEP_BYTES]
