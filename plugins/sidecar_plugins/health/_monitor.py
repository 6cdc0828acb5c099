"""Probing the app, one process at a time, and what follows from each result.

The monitor follows the app's lifecycle events. Each new process of the app gets a fresh run:
every probe's thresholds start over, startup probes run first, and liveness and readiness
probes begin once every startup probe has passed (each after its ``initial_delay``, counted
from the process start). The run ends when the app leaves ``STARTING``/``RUNNING``.

From each result: readiness and startup probes publish a check on the readiness board (the
one readiness truth: ``/readyz``, the proxy, ``READY=1``); a failed liveness or startup probe
asks the core to restart the app (graceful stop, backoff); everything is counted in metrics and
transitions are logged. :meth:`Monitor.live_checks` is the liveness truth shared by ``/livez``,
the ``live`` gauge and the systemd watchdog.

A reload hands :meth:`Monitor.reconfigure` the new probes and what changed (``_changes``); it
applies them to the current run in place, so that a probe that did not change never flaps.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
from anyio.abc import TaskGroup

from sidecar_runtime import (
    AppStarted,
    AppState,
    Event,
    PluginContext,
    ShutdownStarted,
    StateChanged,
    Subscription,
)

from ._changes import ProbeChanges
from ._config import format_seconds
from ._metrics import HealthMetrics
from ._prober import CheckLine, Probe, ProbeResult, Status, run_probe

__all__ = ["CheckLine", "Monitor", "Probe"]

_PROBING = (AppState.STARTING, AppState.RUNNING)


class _Run:
    """One process of the app: when it started, its probes' loops, and the startup gate."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.scope = anyio.CancelScope()
        self.tg: TaskGroup | None = None  # set once the run's task runs
        self.startup_done = anyio.Event()
        self.all_started = False  # liveness and readiness probes were started


class Monitor:
    """Runs the probes against each process of the app; owns the plugin's checks and metrics."""

    def __init__(self, ctx: PluginContext, probes: list[Probe]) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.probes = probes
        self.pid: int | None = None
        self.metrics: HealthMetrics | None = None
        self._metrics_failed = False
        self._tg: TaskGroup | None = None
        self._current: _Run | None = None
        self._idle = "waiting for the app"  # why the board checks fail between runs

    # -- the readiness board ---------------------------------------------------------------------

    def hold_readiness(self) -> None:
        """Register every board check as failing: readiness waits for the first passes."""
        self._reset_board("waiting for the app")

    def _reset_board(self, why: str) -> None:
        self._idle = why
        for probe in self.probes:
            if probe.on_board:
                self.ctx.readiness.set(probe.board_name, False, why)

    def _publish(self, probe: Probe) -> None:
        line = probe.line()
        self.ctx.readiness.set(probe.board_name, probe.state.status == "passing", line.detail)

    def describe(self, board_name: str) -> CheckLine | None:
        """The line of one of this plugin's board checks (with its duration), else None."""
        for probe in self.probes:
            if probe.board_name == board_name and probe.last is not None:
                return probe.line()
        return None

    # -- liveness --------------------------------------------------------------------------------

    def live_checks(self) -> list[CheckLine]:
        """``/livez``: the runtime answers, the app is RUNNING, no liveness/startup probe failed.

        During the graceful shutdown the app counts as live: it is being stopped on purpose.
        """
        state = self.ctx.app.state
        if state is AppState.RUNNING:
            app = CheckLine("app", True, state.value)
        elif self.ctx.shutting_down:
            app = CheckLine("app", True, f"{state.value}, shutting down")
        else:
            app = CheckLine("app", False, f"the app is {state.value}")
        lines = [CheckLine("ping", True), app]
        lines += [p.line() for p in self.probes if p.kind != "readiness"]
        return lines

    @property
    def live(self) -> bool:
        return all(line.ok for line in self.live_checks())

    def _changed(self) -> None:
        """Publish the probes' status and liveness in ``/status``."""
        self.ctx.set_info(live=self.live, probes={p.name: p.state.status for p in self.probes})

    # -- metrics ---------------------------------------------------------------------------------

    def ensure_metrics(self) -> HealthMetrics | None:
        """Register the metrics now, if not yet (on the first RUNNING or the first result).

        A registry that refuses them (another plugin took a name) costs the metrics, never
        the probes: the failure is logged once and the plugin goes on without them."""
        if self.metrics is None and not self._metrics_failed:
            try:
                self.metrics = HealthMetrics(
                    self.ctx.metrics,
                    [(p.name, p.kind) for p in self.probes],
                    ready=lambda: self.ctx.readiness.ready,
                    live=lambda: self.live,
                )
            except ValueError as err:
                self._metrics_failed = True
                self.log.warning("health_metrics_not_registered", error=str(err))
        return self.metrics

    def close(self) -> None:
        """The plugin stops: its checks fail (readiness is never left to a dead plugin)."""
        self._end("the health plugin is not running")
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    # -- reloading -------------------------------------------------------------------------------

    def reconfigure(self, probes: list[Probe], changes: ProbeChanges) -> None:
        """Apply a reloaded probe list in place; ``probes`` are new, unstarted objects.

        Kept probes go on with their state (and take the new check object); retimed ones keep
        their status and counts and resume one new period after their last check; replaced
        and added ones start as new probes of the current run; removed ones stop and leave the
        board. New board checks are set before old ones are removed, so the board never passes
        through a state that is readier than both the old and the new config.
        """
        run = self._current
        old = {p.name: p for p in self.probes}
        result: list[Probe] = []
        fresh: list[Probe] = []
        for new in probes:
            change = changes.changes[new.name]
            if change in ("added", "replaced"):
                self._register(run, new)
                fresh.append(new)
                result.append(new)
                continue
            probe = old[new.name]
            probe.check = new.check
            c = probe.config = new.config
            if change == "retimed":
                probe.state = probe.state.retuned(c.success_threshold, c.failure_threshold)
                if run is not None and probe.scope is not None:
                    self._launch(run, probe)
                if probe.on_board and probe.last is not None:
                    self._publish(probe)
            result.append(probe)
        on_board = {p.board_name for p in result if p.on_board}
        for name, probe in old.items():
            if changes.changes.get(name) in (None, "replaced"):
                probe.cancel()
                if probe.on_board and probe.board_name not in on_board:
                    self.ctx.readiness.remove(probe.board_name)
        self.probes = result
        if run is not None and run.tg is not None:
            for probe in fresh:  # else the run's task starts them when it begins
                if probe.kind == "startup" or run.all_started:
                    self._launch(run, probe)
        if run is not None:
            self._check_startup(run)
        if self.metrics is not None:
            self.metrics.track([(p.name, p.kind) for p in result])
        self._changed()

    def _register(self, run: _Run | None, probe: Probe) -> None:
        """Put a new probe on the board as a new probe of the current run would be."""
        if probe.kind == "startup" and run is not None and run.startup_done.is_set():
            # Startup probes gate the start of a process; this one has started already.
            probe.state.status = "passing"
            probe.note = "added after the app's process started: runs from its next start"
        if not probe.on_board:
            return
        if run is None:
            why = self._idle
        elif probe.kind == "readiness" and not run.startup_done.is_set():
            why = "waiting for the startup probes"
        else:
            why = probe.note or "not probed yet"
        self.ctx.readiness.set(probe.board_name, probe.state.status == "passing", why)

    # -- following the app -----------------------------------------------------------------------

    async def follow(self, events: Subscription[Event]) -> None:
        """Start a run for each process of the app and end it when the process goes."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            app = self.ctx.app
            if app.state in _PROBING and app.pid is not None:  # restarted while the app runs
                self._begin(app.pid)
            if app.state is AppState.RUNNING:
                self.ensure_metrics()
            self._changed()
            async for event in events:
                if isinstance(event, AppStarted):
                    self._begin(event.pid)
                elif isinstance(event, StateChanged):
                    if event.new is AppState.RUNNING:
                        self.ensure_metrics()
                    elif event.new not in _PROBING:
                        self._end(f"the app is {event.new.value}")
                elif isinstance(event, ShutdownStarted):
                    self._end("shutting down")
                self._changed()
            self._end("shutting down")
            self._tg = None

    def _begin(self, pid: int) -> None:
        self._end("")
        assert self._tg is not None
        self.pid = pid
        run = self._current = _Run(anyio.current_time())
        for probe in self.probes:
            probe.reset()
        startups = any(p.kind == "startup" for p in self.probes)
        for probe in self.probes:
            if probe.kind == "readiness":
                why = "waiting for the startup probes" if startups else "not probed yet"
                self.ctx.readiness.set(probe.board_name, False, why)
            elif probe.kind == "startup":
                self.ctx.readiness.set(probe.board_name, False, "not probed yet")
        self._check_startup(run)
        self._tg.start_soon(self._run, run)

    def _end(self, why: str) -> None:
        if self._current is not None:
            self._current.scope.cancel()
            self._current = None
            for probe in self.probes:
                probe.scope = None
        if why:
            self._reset_board(why)
            self.pid = None

    def _check_startup(self, run: _Run) -> None:
        """Open the gate once every startup probe of the run has passed (or there is none)."""
        if all(p.state.status == "passing" for p in self.probes if p.kind == "startup"):
            run.startup_done.set()

    async def _run(self, run: _Run) -> None:
        with run.scope:
            async with anyio.create_task_group() as tg:
                run.tg = tg
                for probe in self.probes:
                    if probe.kind == "startup":
                        self._launch(run, probe)
                await run.startup_done.wait()
                run.all_started = True
                for probe in self.probes:
                    if probe.kind != "startup" and probe.scope is None:
                        self._launch(run, probe)
                await anyio.sleep_forever()  # until the run ends: a reload may add probes

    def _launch(self, run: _Run, probe: Probe) -> None:
        """Start (or restart) the probe's loop in ``run``."""
        assert run.tg is not None
        probe.cancel()
        scope = probe.scope = anyio.CancelScope()
        run.tg.start_soon(self._probe, run, probe, scope)

    async def _probe(self, run: _Run, probe: Probe, scope: anyio.CancelScope) -> None:
        c = probe.config
        with scope:
            await run_probe(
                lambda: probe.check(),  # a reload may give the probe a new check
                probe.state,
                started_at=run.started_at,
                initial_delay=c.initial_delay,
                period=c.period,
                check_timeout=c.timeout,
                on_result=functools.partial(self._record, probe, scope),
                last_check=probe.last_check,
            )

    # -- results ---------------------------------------------------------------------------------

    def _record(
        self, probe: Probe, scope: anyio.CancelScope, result: ProbeResult, change: Status | None
    ) -> None:
        if probe.scope is not scope:
            return  # a loop that a reload or the end of the run has replaced
        probe.last_check = anyio.current_time() - result.duration
        outcome = "success" if result.ok else "timeout" if result.timed_out else "failure"
        metrics = self.ensure_metrics()
        if metrics is not None:
            metrics.observe(probe.name, probe.kind, outcome, result.duration)
        probe.last = result
        if probe.on_board:
            self._publish(probe)
        if change is None:
            return
        fields: dict[str, Any] = {"probe": probe.name, "kind": probe.kind, "pid": self.pid}
        if change == "passing":
            self.log.info("probe_passed", detail=result.detail, **fields)
            if probe.kind == "startup" and self._current is not None:
                self._check_startup(self._current)
        else:
            failures = probe.state.failures
            self.log.warning("probe_failed", detail=result.detail, failures=failures, **fields)
            if probe.kind != "readiness":
                self._restart(probe, result, fields)
        self._changed()

    def _restart(self, probe: Probe, result: ProbeResult, fields: dict[str, Any]) -> None:
        if self.ctx.shutting_down:
            return
        failures = probe.state.failures
        period = format_seconds(probe.config.period)
        reason = (
            f"{probe.kind} probe {probe.name!r} failed {failures} times "
            f"(every {period}): {result.detail}"
        )
        if not self.ctx.app.request_restart(reason):
            return  # a stop or another restart is already under way
        metrics = self.ensure_metrics()
        if metrics is not None:
            metrics.restarted(probe.name, probe.kind)
        if probe.kind == "liveness":
            self.log.warning("liveness_restart_requested", reason=reason, **fields)
        else:
            self.log.warning("startup_restart_requested", reason=reason, **fields)
