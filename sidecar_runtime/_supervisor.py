"""The app supervisor: spawns the app, watches it, applies the restart policy and stops it.

All state changes go through :meth:`AppSupervisor._set_state`, which checks the edge against the
table in ``_state.py``, logs it as an event with fields and publishes it to plugins.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from ._config import Config
from ._convert import signal_name
from ._errors import SpawnError
from ._events import AppExited, AppStarted, Event, Hub, StateChanged
from ._output import Channel, OutputCapture
from ._reaper import Child, Reaper
from ._restart import Decision, ExitStatus, RestartTracker
from ._spawn import SpawnRequest
from ._state import AppState, transition

__all__ = ["AppStats", "AppSupervisor", "resolve_user"]


class AppStats(msgspec.Struct, frozen=True):
    """A snapshot of the app's statistics."""

    state: AppState
    pid: int | None
    starts: int
    restarts: int
    last_exit: ExitStatus | None
    last_exit_at: float | None
    started_at: float | None  # wall clock of the current (or last) process start
    first_started_at: float | None
    failed_starts: int
    #: exits so far, by how: ``{ExitStatus(code=1): 3, ExitStatus(signal=9): 1}``
    exits: Mapping[ExitStatus, int] = {}
    #: seconds from the latest spawn to RUNNING (``start_seconds`` passed), if it got there
    last_start_duration: float | None = None


def resolve_user(user: str | None, group: str | None) -> tuple[int | None, int | None, list[int]]:
    """Resolve ``user`` (name or uid) and ``group`` (name or gid) to ids; ValueError if unknown."""
    import grp
    import pwd

    uid = gid = None
    groups: list[int] = []
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        except KeyError:
            if not user.isdigit():
                msg = f"unknown user {user!r}"
                raise ValueError(msg) from None
            uid = int(user)
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            msg = f"unknown group {group!r}"
            raise ValueError(msg) from None
        groups = [gid]
    if uid is not None and gid is None:
        gid = os.getgid()
    return uid, gid, groups


class AppSupervisor:
    """Runs the app under the restart policy until it ends for good or is stopped."""

    def __init__(
        self,
        config: Config,
        *,
        reaper: Reaper,
        capture: OutputCapture,
        events: Hub[Event],
        log: Any,
        stdin_closed: bool = False,
        on_state: Callable[[AppState], None] | None = None,
    ) -> None:
        self.config = config
        self.reaper = reaper
        self.capture = capture
        self.events = events
        self.log = log
        self.stdin_closed = stdin_closed
        self.on_state = on_state
        restart = config.restart
        self.tracker = RestartTracker(
            policy=restart.policy,
            exit_codes=frozenset(restart.exit_codes),
            max_restarts=None if restart.max_restarts == "unlimited" else restart.max_restarts,
            delay=restart.delay,
            max_delay=restart.max_delay,
            multiplier=restart.multiplier,
            jitter=restart.jitter,
            stable_seconds=restart.stable_seconds,
        )
        self.state = AppState.STOPPED
        self.child: Child | None = None
        self.starts = 0
        self.restarts = 0
        self.failed_starts = 0
        self.exits: dict[ExitStatus, int] = {}
        self.last_start_duration: float | None = None
        self.last_exit: ExitStatus | None = None
        self.last_exit_at: float | None = None
        self.started_at: float | None = None
        self.first_started_at: float | None = None
        self.spawn_error: SpawnError | None = None
        self.finished = anyio.Event()
        self._state_changed = anyio.Event()
        self._stop = anyio.Event()
        self._stop_signal: int = int(config.stop.signal)
        self._stop_deadline: float | None = None
        self._restart_reason: str | None = None
        self._kick = anyio.Event()  # wakes the run phase for a stop or restart request
        self._stop_begun = 0.0
        uid, gid, groups = resolve_user(config.app.user, config.app.group)
        self._ids = (uid, gid, groups)

    # -- what plugins and the runtime may call --------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.running else None

    def statistics(self) -> AppStats:
        return AppStats(
            state=self.state,
            pid=self.pid,
            starts=self.starts,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_exit_at=self.last_exit_at,
            started_at=self.started_at,
            first_started_at=self.first_started_at,
            failed_starts=self.failed_starts,
            exits=dict(self.exits),
            last_start_duration=self.last_start_duration,
        )

    def send_signal(self, sig: int, *, group: bool | None = None) -> bool:
        """Signal the running app (its group when ``signals.forward_to`` says so)."""
        if self.child is None or not self.child.running:
            return False
        to_group = self.config.signals.forward_to == "group" if group is None else group
        return self.child.send_signal(sig, group=to_group)

    def request_stop(self, sig: int | None = None, *, deadline: float | None = None) -> None:
        """Stop the app for good: ``sig`` (default ``stop.signal``), SIGKILL at ``deadline``."""
        if self._stop.is_set():
            return
        if sig is not None:
            self._stop_signal = sig
        self._stop_deadline = deadline
        child = self.child
        if child is not None and child.running and self.state.has_process:
            self._signal_stop(child, "stop requested")  # now, not a task switch later
        self._stop.set()
        self._kick.set()

    def _signal_stop(self, child: Child, reason: str) -> None:
        if self.state is AppState.STOPPING:
            return
        sig = self._stop_signal
        to_group = self.config.signals.forward_to == "group"
        child.send_signal(sig, group=to_group)  # first: no task can run before the bookkeeping
        self._stop_begun = time.monotonic()
        self._set_state(AppState.STOPPING, reason)
        self.log.info("app_stop_signalled", pid=child.pid, signal=signal_name(sig), group=to_group)

    def kill(self) -> None:
        """SIGKILL the app's whole process group now (a second TERM/INT)."""
        if self.child is not None:
            self.log.warning("app_killed", pid=self.child.pid, reason="stop escalated")
            self.child.send_signal(signal.SIGKILL, group=True)

    def request_restart(self, reason: str) -> bool:
        """Stop the app gracefully and start it again after the backoff delay."""
        if self._stop.is_set() or not self.state.has_process or self._restart_reason:
            return False
        self._restart_reason = reason
        self._kick.set()
        return True

    async def wait_state(self, *states: AppState) -> AppState:
        """Wait until the app is in one of ``states``; return it."""
        while self.state not in states:
            await self._state_changed.wait()
        return self.state

    # -- the loop -------------------------------------------------------------------------------

    def _set_state(self, new: AppState, reason: str | None = None, *, level: str = "") -> None:
        why = transition(self.state, new)
        old, self.state = self.state, new
        reason = reason or why
        pid = self.child.pid if self.child is not None else None
        if not level:
            level = "warning" if new in (AppState.BACKOFF, AppState.FATAL) else "info"
        getattr(self.log, level)(
            "app_state_changed", old=old.value, new=new.value, reason=reason, pid=pid
        )
        self.events.publish_nowait(StateChanged(old, new, reason, pid))
        event, self._state_changed = self._state_changed, anyio.Event()
        event.set()
        if self.on_state is not None:
            self.on_state(new)
        if new.is_terminal:
            self.finished.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Spawn the app and supervise it until EXITED or FATAL. ``started`` after first spawn."""
        started = False
        while True:
            if self._stop.is_set():
                self._set_state(AppState.EXITED, "stop requested before start")
                break
            channels = self._spawn()
            if not started:
                task_status.started()
                started = True
            if channels is None:
                break
            status, ran_for = await self._watch()
            stopping = self._stop.is_set()
            await self.capture.drain(channels, self.config.output.drain_timeout)
            if not await self._after_exit(status, ran_for, stopping=stopping):
                break
        if not started:
            task_status.started()

    def _spawn(self) -> list[Channel] | None:
        app = self.config.app
        env = None
        if app.env:
            env = dict(os.environ)
            env.update(app.env)
        uid, gid, groups = self._ids
        prepared = self.capture.prepare()
        request = SpawnRequest(
            argv=app.command,
            env=env,
            cwd=app.working_dir,
            uid=uid,
            gid=gid,
            groups=groups,
            stdout=prepared.child_stdout,
            stderr=prepared.child_stderr,
            close_stdin=self.stdin_closed,
        )
        try:
            child = self.reaper.spawn(request)
        except SpawnError as err:
            self.capture.abandon(prepared)
            self.spawn_error = err
            # The command reports this one line itself (exit 126/127); logs keep the details.
            self.log.info("app_spawn_failed", error=str(err), command=app.command)
            self._set_state(AppState.FATAL, str(err), level="info")
            return None
        channels = self.capture.start(prepared, child.pid)
        self.child = child
        self.starts += 1
        self.started_at = time.time()
        self.first_started_at = self.first_started_at or self.started_at
        self._set_state(AppState.STARTING)
        self.events.publish_nowait(AppStarted(child.pid, self.starts))
        return channels

    async def _watch(self) -> tuple[ExitStatus, float]:
        """Wait for the app's exit, promoting it to RUNNING and stopping it on request."""
        child = self.child
        assert child is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._promote, child)
            tg.start_soon(self._stopper, child)
            status = await child.wait()
            tg.cancel_scope.cancel()
        ran_for = (child.exited_at or time.monotonic()) - child.started_at
        self.last_exit = status
        self.last_exit_at = time.time()
        self.exits[status] = self.exits.get(status, 0) + 1
        how = (
            {"signal": signal_name(status.signal)}
            if status.signal is not None
            else {"code": status.code}
        )
        self.log.info("app_exited", pid=child.pid, ran_for=round(ran_for, 3), **how)
        self.events.publish_nowait(AppExited(child.pid, status.code, status.signal, ran_for))
        return status, ran_for

    async def _promote(self, child: Child) -> None:
        await anyio.sleep(self.config.restart.start_seconds)
        if child.running and self.state is AppState.STARTING:
            self.last_start_duration = time.monotonic() - child.started_at
            self._set_state(AppState.RUNNING)

    async def _stopper(self, child: Child) -> None:
        while True:
            await self._kick.wait()
            self._kick = anyio.Event()
            if self._stop.is_set() or self._restart_reason is not None:
                break
        reason = "stop requested" if self._stop.is_set() else f"restart: {self._restart_reason}"
        self._signal_stop(child, reason)
        begun = self._stop_begun
        deadline = self._stop_deadline
        if deadline is None or self._restart_reason is not None:
            deadline = begun + self.config.stop.timeout
        with anyio.move_on_after(max(deadline - time.monotonic(), 0)):
            await child.wait()
            return
        self.log.warning(
            "app_stop_timed_out",
            pid=child.pid,
            elapsed=round(time.monotonic() - begun, 3),
            action="SIGKILL to the process group",
        )
        child.send_signal(signal.SIGKILL, group=True)

    async def _after_exit(self, status: ExitStatus, ran_for: float, *, stopping: bool) -> bool:
        """Apply the restart policy. True to start the app again."""
        if stopping:
            self._set_state(AppState.EXITED, "stopped")
            return False
        if self._restart_reason is not None:
            reason, self._restart_reason = self._restart_reason, None
            delay = self.tracker.on_requested_restart(ran_for)
            self._set_state(AppState.BACKOFF, f"restart requested: {reason}")
        else:
            decision = self.tracker.on_exit(status, ran_for)
            if self.state is AppState.STARTING and decision.decision is not Decision.EXIT:
                self.failed_starts += 1
            if decision.decision is Decision.EXIT:
                self._set_state(AppState.EXITED, decision.reason)
                return False
            if decision.decision is Decision.GIVE_UP:
                self._set_state(AppState.FATAL, decision.reason)
                return False
            delay = decision.delay
            self._set_state(
                AppState.BACKOFF, f"exited ({self._describe(status)}), {decision.reason}"
            )
        self.log.info("app_restart_scheduled", delay=round(delay, 3))
        with anyio.move_on_after(delay):
            await self._stop.wait()
        if self._stop.is_set():
            self._set_state(AppState.EXITED, "stop requested while waiting to restart")
            return False
        self.restarts += 1
        return True

    @staticmethod
    def _describe(status: ExitStatus) -> str:
        if status.signal is not None:
            return f"signal {signal_name(status.signal)}"
        return f"code {status.code}"
