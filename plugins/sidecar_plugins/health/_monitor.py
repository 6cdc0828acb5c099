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
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
import msgspec
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

from ._config import ProbeConfig, format_seconds
from ._metrics import HealthMetrics
from ._prober import ProbeResult, ProbeState, Status, run_probe
from ._probes import Check

__all__ = ["CheckLine", "Monitor", "Probe"]

_PROBING = (AppState.STARTING, AppState.RUNNING)


class CheckLine(msgspec.Struct, frozen=True):
    """One line of a ``?verbose`` listing."""

    name: str
    ok: bool
    detail: str = ""
    duration: float | None = None


class Probe:
    """A configured probe, its check, and its state in the current run."""

    def __init__(self, name: str, config: ProbeConfig, check: Check, board_name: str) -> None:
        self.name = name
        self.config = config
        self.kind = config.kind
        self.check = check
        self.board_name = board_name
        self.state = self._new_state()
        self.last: ProbeResult | None = None

    def _new_state(self) -> ProbeState:
        c = self.config
        return ProbeState(c.kind, c.success_threshold, c.failure_threshold)

    def reset(self) -> None:
        self.state = self._new_state()
        self.last = None

    @property
    def on_board(self) -> bool:
        """Readiness and startup probes hold readiness back; liveness probes do not."""
        return self.kind != "liveness"

    def line(self) -> CheckLine:
        ok = self.state.status != "failing"
        if self.last is None:
            return CheckLine(self.board_name, ok, "not probed yet")
        duration = None if self.last.timed_out else self.last.duration
        return CheckLine(self.board_name, ok, self._detail(), duration)

    def _detail(self) -> str:
        assert self.last is not None
        s = self.state
        if self.last.ok and s.status != "passing":
            return f"{self.last.detail} ({s.successes}/{s.success_threshold} successes)"
        if not self.last.ok and s.status != "failing":
            return f"{self.last.detail} ({s.failures}/{s.failure_threshold} failures)"
        return self.last.detail


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
        self._run_scope: anyio.CancelScope | None = None
        self._startup_done = anyio.Event()

    # -- the readiness board ---------------------------------------------------------------------

    def hold_readiness(self) -> None:
        """Register every board check as failing: readiness waits for the first passes."""
        self._reset_board("waiting for the app")

    def _reset_board(self, why: str) -> None:
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
        for probe in self.probes:
            probe.reset()
        startups = any(p.kind == "startup" for p in self.probes)
        for probe in self.probes:
            if probe.kind == "readiness":
                why = "waiting for the startup probes" if startups else "not probed yet"
                self.ctx.readiness.set(probe.board_name, False, why)
            elif probe.kind == "startup":
                self.ctx.readiness.set(probe.board_name, False, "not probed yet")
        self._startup_done = anyio.Event()
        if not startups:
            self._startup_done.set()
        self._run_scope = anyio.CancelScope()
        self._tg.start_soon(self._run, self._run_scope, self._startup_done, anyio.current_time())

    def _end(self, why: str) -> None:
        if self._run_scope is not None:
            self._run_scope.cancel()
            self._run_scope = None
        if why:
            self._reset_board(why)
            self.pid = None

    async def _run(
        self, scope: anyio.CancelScope, startup_done: anyio.Event, started_at: float
    ) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                for probe in self.probes:
                    if probe.kind == "startup":
                        tg.start_soon(self._probe, probe, started_at)
                await startup_done.wait()
                for probe in self.probes:
                    if probe.kind != "startup":
                        tg.start_soon(self._probe, probe, started_at)

    async def _probe(self, probe: Probe, started_at: float) -> None:
        c = probe.config
        await run_probe(
            probe.check,
            probe.state,
            started_at=started_at,
            initial_delay=c.initial_delay,
            period=c.period,
            check_timeout=c.timeout,
            on_result=functools.partial(self._record, probe),
        )

    # -- results ---------------------------------------------------------------------------------

    def _record(self, probe: Probe, result: ProbeResult, change: Status | None) -> None:
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
            if probe.kind == "startup" and all(
                p.state.status == "passing" for p in self.probes if p.kind == "startup"
            ):
                self._startup_done.set()
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
