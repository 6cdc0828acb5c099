"""How long sidecar-run takes: its worst-case stop, a restart in place, its start-up.

A service manager or an orchestrator must allow that much: ``TimeoutStopSec=`` and
``terminationGracePeriodSeconds`` cover the stop, ``WatchdogSec=`` a restart in place,
``TimeoutStartSec=`` the start-up. ``sidecar-run systemd-unit`` writes these numbers and
``sidecar-run check`` compares a unit or a manifest with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._config import Config
from ._plugins import PluginSpec

__all__ = [
    "STOP_MARGIN",
    "SYSTEMD_DEFAULT_TIMEOUT",
    "format_timespan",
    "health_config",
    "recovery_seconds",
    "round_up",
    "stop_budget",
    "timeout_start_sec",
    "timeout_stop_sec",
    "watchdog_sec",
]

#: systemd's DefaultTimeoutStartSec= and DefaultTimeoutStopSec=.
SYSTEMD_DEFAULT_TIMEOUT = 90.0
#: Added to the worst-case stop so that the platform's SIGKILL never lands inside it.
STOP_MARGIN = 5.0


def stop_budget(config: Config) -> float:
    """Worst-case seconds from SIGTERM to sidecar-run's exit.

    ``stop.timeout`` (pre-stop delay, shutdown hooks, the app's stop and SIGKILL), then reading
    the app's last output (``output.drain_timeout``), then the plugins' drain hooks and the
    plugins' own stop, each with the runtime's fixed grace.
    """
    from ._runtime import _PLUGIN_STOP_GRACE

    return config.stop.timeout + config.output.drain_timeout + 2 * _PLUGIN_STOP_GRACE


def timeout_stop_sec(config: Config) -> int:
    """``TimeoutStopSec=``: the worst-case stop plus a margin, in whole seconds."""
    return math.ceil(stop_budget(config) + STOP_MARGIN)


def recovery_seconds(config: Config) -> float:
    """The longest time the app is not live while sidecar-run restarts it in place.

    A liveness failure: the graceful stop (up to ``stop.timeout``), the first backoff step
    (``restart.delay``), ``restart.start_seconds``. A crash loop: any backoff step, capped at
    ``restart.max_delay``, and ``start_seconds``.
    """
    restart = config.restart
    longest = max(config.stop.timeout + restart.delay, restart.max_delay)
    return longest + restart.start_seconds


def health_config(specs: Sequence[PluginSpec]) -> Any:
    """The health plugin's decoded config, if it is enabled."""
    for spec in specs:
        if spec.name == "health":
            return spec.config
    return None


def _probes(specs: Sequence[PluginSpec], kind: str) -> list[Any]:
    health = health_config(specs)
    return [p for p in getattr(health, "probes", ()) if getattr(p, "kind", None) == kind]


def watchdog_sec(config: Config, specs: Sequence[PluginSpec]) -> float | None:
    """``WatchdogSec=``, when a liveness probe exists and the health plugin's watchdog is on.

    The plugin pings at half of it while the app is live, so a pause in the pings is tolerated
    only while it is shorter than half: that half must cover one restart in place
    (:func:`recovery_seconds`) plus a margin. Only a runtime that is itself stuck, or an app
    that stays down after the core's restart, lets systemd's watchdog act.
    """
    health = health_config(specs)
    if health is None or not getattr(health, "watchdog", False) or not _probes(specs, "liveness"):
        return None
    recovery = recovery_seconds(config)
    half = recovery + max(0.5, recovery / 10)
    return round_up(2 * half)


def timeout_start_sec(config: Config, specs: Sequence[PluginSpec]) -> int:
    """``TimeoutStartSec=``: ``READY=1`` waits for ``start_seconds`` and the startup and
    readiness probes; twice that, and never less than systemd's default."""
    startup = [p.initial_delay + p.failure_threshold * p.period for p in _probes(specs, "startup")]
    ready = [
        p.initial_delay + p.success_threshold * p.period + p.timeout
        for p in _probes(specs, "readiness")
    ]
    expected = config.restart.start_seconds + max(startup, default=0) + max(ready, default=0)
    return math.ceil(max(SYSTEMD_DEFAULT_TIMEOUT, 2 * expected))


def round_up(seconds: float) -> float:
    """Whole seconds from 10 s on, tenths below (systemd reads ``2500ms``)."""
    if seconds >= 10:
        return float(math.ceil(seconds))
    return math.ceil(round(seconds * 10, 6)) / 10


def format_timespan(seconds: float) -> str:
    """A systemd time span: ``47s``, ``2500ms``."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"
