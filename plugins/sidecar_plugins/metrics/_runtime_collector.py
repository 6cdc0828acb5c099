"""The ``runtime`` collector: the app's lifecycle, its output and the plugins, as sidecar-run
sees them. Every value comes from the snapshots the core hands out (``ctx.app.statistics()``,
``ctx.runtime_statistics()``, ``ctx.readiness``), so a scrape costs no I/O."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from sidecar_runtime import AppState, ExitStatus, PluginContext

from ._catalog import SPECS, by_name

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["PLUGIN_STATES", "RuntimeCollector", "signal_label"]

#: The states of a plugin, as ``/status`` shows them; each one gets a series.
PLUGIN_STATES = ("starting", "running", "backoff", "failed", "finished", "stopped")


def signal_label(number: int) -> str:
    """``KILL`` for 9, as ``/status`` names signals; the number for unnamed ones."""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def _exit_order(item: tuple[ExitStatus, int]) -> tuple[int, int]:
    status = item[0]
    return (0, status.code or 0) if status.signal is None else (1, status.signal)


class RuntimeCollector:
    """A prometheus_client collector reading the runtime's snapshots at each scrape."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx
        self._ready_duration: float | None = None

    def describe(self) -> list[Metric]:
        return [spec.family() for spec in SPECS if spec.collector == "runtime"]

    def collect(self) -> list[Metric]:
        ctx = self._ctx
        app = ctx.app.statistics()
        rt = ctx.runtime_statistics()
        readiness = ctx.readiness
        out: list[Metric] = []

        def one(name: str, value: float, labels: tuple[str, ...] = ()) -> None:
            family = by_name(name).family()
            family.add_metric(labels, value)
            out.append(family)

        one("sidecar_build_info", 1, (rt.version,))
        one("sidecar_start_time_seconds", rt.started_at)
        one("sidecar_shutting_down", int(rt.shutting_down))
        one("sidecar_app_up", int(app.state is AppState.RUNNING))
        states = by_name("sidecar_app_state").family()
        for app_state in AppState:
            states.add_metric([app_state.value], int(app.state is app_state))
        out.append(states)
        one("sidecar_app_ready", int(readiness.ready))
        if app.started_at is not None:
            one("sidecar_app_start_time_seconds", app.started_at)
        one("sidecar_app_starts_total", app.starts)
        one("sidecar_app_restarts_total", app.restarts)
        one("sidecar_app_failed_starts_total", app.failed_starts)
        exits = by_name("sidecar_app_exits_total").family()
        for status, count in sorted(app.exits.items(), key=_exit_order):
            labels = (
                {"signal": signal_label(status.signal)}
                if status.signal is not None
                else {"code": str(status.code)}
            )
            exits.add_sample("sidecar_app_exits_total", labels, count)
        out.append(exits)
        if app.last_start_duration is not None:
            one("sidecar_app_start_duration_seconds", app.last_start_duration)
        since, spawned = readiness.ready_since, app.started_at
        if since is not None and spawned is not None and since >= spawned:
            self._ready_duration = since - spawned
        if self._ready_duration is not None:
            one("sidecar_app_ready_duration_seconds", self._ready_duration)
        one("sidecar_orphans_reaped_total", rt.orphans_reaped)
        reloads = by_name("sidecar_config_reloads_total").family()
        reloads.add_metric(["success"], rt.reloads_succeeded)
        reloads.add_metric(["failure"], rt.reloads_failed)
        out.append(reloads)
        one("sidecar_config_last_reload_success_timestamp_seconds", rt.last_reload_success or 0)
        output_bytes = by_name("sidecar_output_bytes_total").family()
        output_lines = by_name("sidecar_output_lines_total").family()
        for stream in sorted(rt.output_bytes):
            output_bytes.add_metric([stream], rt.output_bytes[stream])
            output_lines.add_metric([stream], rt.output_lines.get(stream, 0))
        out += [output_bytes, output_lines]
        one("sidecar_output_dropped_lines_total", rt.output_dropped)
        plugin_state = by_name("sidecar_plugin_state").family()
        restarts = by_name("sidecar_plugin_restarts_total").family()
        for plugin in rt.plugins:
            known = (
                PLUGIN_STATES if plugin.state in PLUGIN_STATES else (*PLUGIN_STATES, plugin.state)
            )
            for state in known:
                plugin_state.add_metric([plugin.name, state], int(plugin.state == state))
            restarts.add_metric([plugin.name], plugin.restarts)
        out += [plugin_state, restarts]
        return out
