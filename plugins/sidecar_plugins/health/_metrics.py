"""The health plugin's Prometheus metrics, on the runtime's shared registry.

Created on first use rather than at start-up: importing ``prometheus_client`` costs about
100 ms, and ``sidecar-run -- true`` with the default config should not pay it. Everything
registered here is unregistered by :meth:`HealthMetrics.close` (the plugin may be restarted).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["METRIC_DOCS", "HealthMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("success", "failure", "timeout")

#: name → (type, labels, help); the reference page is generated from this table.
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "sidecar_health_probe_results_total": (
        "counter",
        "probe, kind, outcome",
        "Probe results by probe, kind and outcome (`success`, `failure`, `timeout`).",
    ),
    "sidecar_health_probe_duration_seconds": (
        "histogram",
        "probe, kind",
        "How long each check took (a timed-out check counts its timeout).",
    ),
    "sidecar_health_ready": (
        "gauge",
        "-",
        "1 while the readiness board says ready (what `/readyz` answers), else 0.",
    ),
    "sidecar_health_live": (
        "gauge",
        "-",
        "1 while the app is live (what `/livez` answers), else 0.",
    ),
    "sidecar_health_liveness_restarts_total": (
        "counter",
        "probe, kind",
        "Restarts of the app requested because a liveness or startup probe failed.",
    ),
}


class HealthMetrics:
    """Counters, a histogram and two gauges; the gauges read their value at scrape time."""

    def __init__(
        self,
        registry: Any,
        probes: Sequence[tuple[str, str]],
        *,
        ready: Callable[[], bool],
        live: Callable[[], bool],
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._registry = registry
        self.results = Counter(
            "sidecar_health_probe_results",
            _help("sidecar_health_probe_results_total"),
            ["probe", "kind", "outcome"],
            registry=None,
        )
        self.duration = Histogram(
            "sidecar_health_probe_duration_seconds",
            _help("sidecar_health_probe_duration_seconds"),
            ["probe", "kind"],
            buckets=_BUCKETS,
            registry=None,
        )
        self.ready = Gauge("sidecar_health_ready", _help("sidecar_health_ready"), registry=None)
        self.ready.set_function(lambda: float(ready()))
        self.live = Gauge("sidecar_health_live", _help("sidecar_health_live"), registry=None)
        self.live.set_function(lambda: float(live()))
        self.restarts = Counter(
            "sidecar_health_liveness_restarts",
            _help("sidecar_health_liveness_restarts_total"),
            ["probe", "kind"],
            registry=None,
        )
        self._probes: set[tuple[str, str]] = set()
        self.track(probes)  # every series exists from the start, at 0
        self._collectors = [self.results, self.duration, self.ready, self.live, self.restarts]
        registered = []
        try:
            for collector in self._collectors:
                registry.register(collector)
                registered.append(collector)
        except Exception:
            for collector in registered:
                registry.unregister(collector)
            raise

    def track(self, probes: Sequence[tuple[str, str]]) -> None:
        """Follow a reloaded probe list: new probes get their series at 0, removed ones lose
        theirs (a probe kept under its name and kind keeps its counts)."""
        wanted = set(probes)
        for name, kind in self._probes - wanted:
            series: list[tuple[Any, tuple[str, ...]]] = [
                (self.results, (name, kind, o)) for o in OUTCOMES
            ]
            series += [(self.duration, (name, kind)), (self.restarts, (name, kind))]
            for metric, labels in series:
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)
        for name, kind in probes:
            if (name, kind) in self._probes:
                continue
            for outcome in OUTCOMES:
                self.results.labels(name, kind, outcome)
            self.duration.labels(name, kind)
            if kind != "readiness":
                self.restarts.labels(name, kind)
        self._probes = wanted

    def observe(self, probe: str, kind: str, outcome: str, duration: float) -> None:
        self.results.labels(probe, kind, outcome).inc()
        self.duration.labels(probe, kind).observe(duration)

    def restarted(self, probe: str, kind: str) -> None:
        self.restarts.labels(probe, kind).inc()

    def close(self) -> None:
        """Unregister every collector (idempotent)."""
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self._registry.unregister(collector)
        self._collectors = []


def _help(name: str) -> str:
    text = METRIC_DOCS[name][2]
    return text.replace("`", "")
