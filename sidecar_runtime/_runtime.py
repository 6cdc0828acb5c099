"""The runtime: wires the reaper, signals, plugins and the app together and runs the lifecycle.

Start-up: signal handling and the reaper → plugins in order, each ready (``started``) → the app.
Shutdown (a stop signal, the app's final exit, a critical plugin, a request), against one
deadline of ``stop.timeout``:

1. readiness false, ``STOPPING=1``, shutdown event to plugins; optional pre-stop delay;
2. plugins' shutdown hooks (the proxy drains) run concurrently;
3. the app's stop signal; wait; SIGKILL its group at the deadline;
4. the app's pipes read to their end; output subscribers get the end of stream; plugins'
   drain hooks (the logs plugin ships what is left) run concurrently;
5. plugins stopped in reverse start order; exit with the app's status.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import anyio
import msgspec

from . import __version__
from ._config import Config
from ._context import PluginInfo, Services
from ._convert import signal_name
from ._errors import PluginError
from ._events import Event, Hub, OutputLine, ShutdownStarted
from ._http import Request, Response, RouteTable
from ._logging import get_logger
from ._notify import Notifier
from ._output import OutputCapture
from ._plugins import PluginRunner, PluginSpec
from ._readiness import Readiness
from ._reaper import Reaper, set_child_subreaper
from ._reload import ConfigLoader, Reloader
from ._signals import SignalPolicy, take_early_signals
from ._state import AppState
from ._supervisor import AppSupervisor

__all__ = ["EXIT_CRITICAL_PLUGIN", "Runtime"]

#: Exit status when a critical plugin failed and stopped the runtime (EX_SOFTWARE).
EXIT_CRITICAL_PLUGIN = 70
_PLUGIN_STOP_GRACE = 5.0


class Runtime:
    """One supervised app and its plugins."""

    def __init__(
        self,
        config: Config,
        plugins: list[PluginSpec],
        *,
        stdin_closed: bool = False,
        environ: dict[str, str] | None = None,
        reload_config: ConfigLoader | None = None,
        reload_signals: frozenset[int] = frozenset(),
    ) -> None:
        self.config = config
        self.log = get_logger()
        self.reaper = Reaper(on_orphan=self._orphan_reaped)
        self.events: Hub[Event] = Hub()
        self.output_hub: Hub[OutputLine] = Hub()
        self.capture = OutputCapture(config.output, self.output_hub)
        self.readiness = Readiness()
        self.notifier = Notifier(environ) if config.notify else Notifier({})
        self.routes = RouteTable()
        self.supervisor = AppSupervisor(
            config,
            reaper=self.reaper,
            capture=self.capture,
            events=self.events,
            log=self.log,
            stdin_closed=stdin_closed,
            on_state=self._on_state,
        )
        self.shutdown_event = anyio.Event()
        self.services = Services(
            supervisor=self.supervisor,
            reaper=self.reaper,
            readiness=self.readiness,
            events=self.events,
            output=self.output_hub,
            output_stats=self.capture.stats,
            routes=self.routes,
            shutdown=self.shutdown_event,
            request_shutdown=self.request_shutdown,
            plugin_infos=self._plugin_infos,
            version=__version__,
            notify=self.notifier.notify,
            default_output_buffer=config.output.subscriber_buffer,
        )
        self.runners = [self._make_runner(spec) for spec in plugins]
        self.reloader = Reloader(self, reload_config)
        self.services.reload_stats = self.reloader.stats
        self._tg: Any = None
        self.signals = SignalPolicy(
            rewrite=config.signals.rewrite_map(),
            forward=self.supervisor.send_signal,
            stop=self._stop_signal_received,
            escalate=self.supervisor.kill,
            on_winch=self.capture.sync_winsize,
            log=self.log,
            on_child=self.reaper.reap,
            on_reload=self._reload_signal_received,
            reload_signals=reload_signals if reload_config is not None else frozenset(),
        )
        self.routes.add("GET", "/status", self._status, owner="core")
        self.routes.add("POST", "/restart", self._restart, owner="core", mutating=True)
        self.routes.add("POST", "/reload", self._reload, owner="core", mutating=True)
        self.readiness.set("app", False, "not started")
        self.readiness.on_change(self._on_ready_change)
        self._shutdown_reason: str | None = None
        self._stop_sig: int | None = None
        self._critical_failure: str | None = None
        self._stopped_by: int | None = None
        self._notified_ready = False
        self._stopping_notified = False
        self._shutdown_logged = False
        self._deadline: float | None = None
        self._wake = anyio.Event()

    # -- callbacks -------------------------------------------------------------------------------

    def _make_runner(self, spec: PluginSpec) -> PluginRunner:
        return PluginRunner(spec, self.services, self._plugin_logger, self._critical_failed)

    @property
    def shutting_down(self) -> bool:
        return self._shutdown_reason is not None

    async def add_runner(self, spec: PluginSpec) -> bool:
        """Start a plugin while running (a reload added its table); false if it failed."""
        runner = self._make_runner(spec)
        try:
            await self._tg.start(runner.run)
        except PluginError as err:
            self.log.error("plugin_start_failed", plugin=spec.name, error=str(err))
            return False
        self.runners.append(runner)
        return True

    async def replace_runner(self, runner: PluginRunner, spec: PluginSpec) -> bool:
        """Restart ``runner``'s plugin with ``spec``; if that fails, start the old one again."""
        index = self.runners.index(runner)
        runner.scope.cancel()
        with anyio.move_on_after(_PLUGIN_STOP_GRACE):
            await runner.done.wait()
        for candidate in (spec, runner.spec):
            fresh = self._make_runner(candidate)
            try:
                await self._tg.start(fresh.run)
            except PluginError as err:
                self.log.error("plugin_start_failed", plugin=candidate.name, error=str(err))
                continue
            self.runners[index] = fresh
            return candidate is spec
        self.runners.pop(index)
        return False

    def _reload_signal_received(self, sig: int) -> None:
        if self._tg is not None:
            self._tg.start_soon(self.reloader.reload, f"received SIG{signal_name(sig)}")

    async def _reload(self, request: Request) -> Response:
        """POST /reload: load the configuration again and apply it (the app keeps running)."""
        outcome = await self.reloader.reload(
            f"requested over the admin listener by {request.client or 'a local client'}"
        )
        status = 200 if outcome.ok else 400 if self.reloader.load is not None else 409
        return Response.json(msgspec.to_builtins(outcome), status=status)

    def _plugin_logger(self, name: str) -> Any:
        return self.log.bind(plugin=name)

    def _plugin_infos(self) -> list[PluginInfo]:
        return [r.snapshot() for r in self.runners]

    def _orphan_reaped(self, pid: int, status: Any) -> None:
        self.log.debug("orphan_reaped", pid=pid, returncode=status.returncode)

    def _on_state(self, state: AppState) -> None:
        if self.notifier.enabled:
            self.notifier.notify(STATUS=f"app {state.value.lower()}")
        self.readiness.set("app", state is AppState.RUNNING, state.value)
        if state.is_terminal:
            self._wake.set()

    def _on_ready_change(self, ready: bool) -> None:
        if ready and self.notifier.enabled and not self._notified_ready:
            self._notified_ready = True  # READY=1 once: systemd's start-up is over
            self.notifier.notify(READY=1, STATUS="app ready")
        elif (
            self.notifier.enabled
            and self.supervisor.state is AppState.RUNNING
            and not self.readiness.shutting_down
        ):
            # a probe changed readiness while the app runs; state changes say the rest
            self.notifier.notify(STATUS="app ready" if ready else "app running, not ready")
        self.log.info("readiness_changed", ready=ready)

    def _stop_signal_received(self, received: int, target: int) -> None:
        self._stopped_by = self._stopped_by or received
        sent = int(self.config.stop.signal) if received == signal.SIGTERM else target
        self.request_shutdown(f"received SIG{signal_name(received)}", stop_signal=sent or None)

    def _critical_failed(self, name: str, error: str) -> None:
        self._critical_failure = f"critical plugin {name!r} failed: {error}"
        self.request_shutdown(self._critical_failure)

    def request_shutdown(self, reason: str, *, stop_signal: int | None = None) -> None:
        """Begin the graceful shutdown (idempotent)."""
        if self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        self._stop_sig = stop_signal
        self._deadline = time.monotonic() + self.config.stop.timeout
        self.signals.stopping = True
        self._notify_stopping(reason)
        self._log_shutdown(reason)
        if not self.config.stop.pre_stop_delay and not self.services.hooks:
            # Nothing to wait for: the stop signal goes out at once. Step 1 follows in the same
            # synchronous step, so no task (no request, no probe) runs in between.
            self.supervisor.request_stop(stop_signal, deadline=self._deadline)
        self._begin_shutdown(reason)
        self._wake.set()

    def _log_shutdown(self, reason: str) -> None:
        if not self._shutdown_logged:
            self._shutdown_logged = True
            self.log.info("shutdown_started", reason=reason)

    def _notify_stopping(self, reason: str) -> None:
        if self.notifier.enabled and not self._stopping_notified:
            self._stopping_notified = True
            self.notifier.notify(STOPPING=1, STATUS=f"stopping: {reason}")

    def _begin_shutdown(self, reason: str) -> None:
        """Step 1, synchronous: readiness false, STOPPING=1, plugins told. Runs once."""
        if self.shutdown_event.is_set():
            return
        self._log_shutdown(reason)
        self._notify_stopping(reason)
        self.readiness.begin_shutdown()
        self.shutdown_event.set()
        self.events.publish_nowait(ShutdownStarted(reason))

    # -- endpoints -------------------------------------------------------------------------------

    async def _restart(self, request: Request) -> Response:
        """POST /restart: stop the app gracefully and start it again (backoff applies)."""
        reason = f"requested over the admin listener by {request.client or 'a local client'}"
        if self.supervisor.request_restart(reason):
            self.log.info("app_restart_requested", client=request.client)
            return Response.json({"restarting": True, "pid": self.supervisor.pid}, status=202)
        body = {"restarting": False, "state": self.supervisor.state.value}
        return Response.json(body, status=409)

    async def _status(self, request: Request) -> Response:
        """GET /status: the app's state, restarts, last exit and the plugins, as JSON."""
        stats = self.supervisor.statistics()
        last_exit = None
        if stats.last_exit is not None:
            last_exit = {
                "code": stats.last_exit.code,
                "signal": signal_name(stats.last_exit.signal) if stats.last_exit.signal else None,
                "returncode": stats.last_exit.returncode,
                "at": stats.last_exit_at,
            }
        now = time.time()
        body = {
            "state": stats.state.value,
            "pid": stats.pid,
            "ready": self.readiness.ready,
            "uptime_seconds": round(now - stats.started_at, 3)
            if stats.pid is not None and stats.started_at
            else None,
            "starts": stats.starts,
            "restarts": stats.restarts,
            "last_exit": last_exit,
            "command": list(self.config.app.command),
            "runtime": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_seconds": round(now - self.services.started_at, 3),
                "orphans_reaped": self.reaper.orphans_reaped,
                "output": {
                    **{
                        name: {"bytes": st.bytes, "lines": st.lines}
                        for name, st in self.capture.stats.items()
                    },
                    "dropped_lines": self.output_hub.dropped,
                },
                "shutting_down": self.readiness.shutting_down,
            },
            "plugins": {
                info.name: {
                    "state": info.state,
                    "critical": info.critical,
                    "restarts": info.restarts,
                    "last_error": info.last_error,
                    **({"info": dict(info.info)} if info.info else {}),
                }
                for info in self._plugin_infos()
            },
        }
        return Response.json(body)

    # -- the lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the app is gone for good; return the exit status for the command."""
        if self.config.subreaper and os.getpid() != 1 and not set_child_subreaper():
            self.log.warning("subreaper_unavailable", hint="orphans will not be reaped")
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.signals.run)  # owns SIGCHLD too, for the reaper
            await tg.start(functools.partial(self.reaper.run, own_sigchld=False))
            for sig in take_early_signals():
                self.signals.handle(sig)
            self.capture.bind(tg)
            for runner in self.runners:
                if self._shutdown_reason is None:
                    await tg.start(runner.run)
            if self._shutdown_reason is not None:
                self.supervisor.request_stop()  # it ends in EXITED without spawning
            await tg.start(self.supervisor.run)
            while not self.supervisor.finished.is_set() and self._shutdown_reason is None:
                await self._wake.wait()
                self._wake = anyio.Event()
            await self._shutdown(tg)
            tg.cancel_scope.cancel()
        self.notifier.close()
        return self.exit_status()

    async def _shutdown(self, tg: Any) -> None:
        deadline = self._deadline or time.monotonic() + self.config.stop.timeout
        self._begin_shutdown(self._shutdown_reason or "app exited")
        if not self.supervisor.finished.is_set():
            pre_stop = min(self.config.stop.pre_stop_delay, max(deadline - time.monotonic(), 0))
            if pre_stop:
                self.log.info("pre_stop_delay_started", seconds=pre_stop)
                with anyio.move_on_after(pre_stop):
                    await self.supervisor.finished.wait()
        await self._run_hooks(deadline)
        self.supervisor.request_stop(self._stop_sig, deadline=deadline)
        await self.supervisor.finished.wait()
        with anyio.CancelScope(shield=True):
            await self.capture.close(self.config.output.drain_timeout)
            self.events.close()
            budget = max(deadline - time.monotonic(), _PLUGIN_STOP_GRACE)
            with anyio.move_on_after(budget):  # lossless subscribers read their last lines
                await self.output_hub.wait_read()
            await self._run_hooks(time.monotonic() + budget, drain=True)
            with anyio.move_on_after(_PLUGIN_STOP_GRACE):  # one budget for all plugins
                for runner in reversed(self.runners):
                    runner.scope.cancel()
                    await runner.done.wait()
        self.log.info("shutdown_finished", exit_status=self.exit_status())

    async def _run_hooks(self, deadline: float, *, drain: bool = False) -> None:
        hooks = list(self.services.drain_hooks if drain else self.services.hooks)
        if not hooks:
            return

        async def call(name: str, hook: Any) -> None:
            try:
                await hook()
            except Exception as err:
                fields = {"plugin": name, "error": str(err), "exc_info": err}
                if drain:
                    self.log.error("drain_hook_failed", **fields)
                else:
                    self.log.error("shutdown_hook_failed", **fields)

        with anyio.move_on_after(max(deadline - time.monotonic(), 0)) as scope:
            async with anyio.create_task_group() as tg:
                for name, hook in hooks:
                    tg.start_soon(call, name, hook)
        if scope.cancelled_caught:
            if drain:
                self.log.warning("drain_hooks_timed_out")
            else:
                self.log.warning("shutdown_hooks_timed_out")

    def exit_status(self) -> int:
        """The app's status (128+N for signal N); 126/127 if it could not be started."""
        sup = self.supervisor
        if sup.spawn_error is not None:
            return sup.spawn_error.exit_code
        if self._critical_failure is not None:
            return EXIT_CRITICAL_PLUGIN
        if sup.last_exit is not None:
            return sup.last_exit.returncode
        if self._stopped_by is not None:  # stopped before the app was started
            return 128 + self._stopped_by
        return 0
