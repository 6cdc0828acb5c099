"""The templates plugin's Prometheus metrics, on the runtime's shared registry.

The counts live in plain :class:`TemplateStats` objects from the first render on; a collector
reads them at scrape time. It is registered only after the first renders (once the app may
start), so ``prometheus_client``'s import (about 100 ms) never delays the app's start.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ACTION_RESULTS", "METRIC_DOCS", "RENDER_RESULTS", "TemplateStats", "TemplatesMetrics"]

RENDER_RESULTS = ("changed", "unchanged", "failed")
ACTION_RESULTS = ("success", "failure", "skipped")

#: name → (type, labels, help); the reference page is generated from this table.
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "sidecar_templates_renders_total": (
        "counter",
        "template, result",
        "Renders by result: `changed` (the target was rewritten), `unchanged` (same output, "
        "nothing written), `failed` (the old target was kept).",
    ),
    "sidecar_templates_actions_total": (
        "counter",
        "template, action, result",
        "`on_change` actions (`signal`, `exec`, `restart`) by result (`success`, `failure`, "
        "`skipped`); an action shared by several changed templates counts for each.",
    ),
    "sidecar_templates_last_render_timestamp_seconds": (
        "gauge",
        "template",
        "Unix time of the latest render attempt, successful or not.",
    ),
    "sidecar_templates_last_success_timestamp_seconds": (
        "gauge",
        "template",
        "Unix time of the latest successful render (0 before the first).",
    ),
}


class TemplateStats:
    """One template's counts, kept in plain Python."""

    def __init__(self, action: str | None) -> None:
        self.action = action
        self.renders = dict.fromkeys(RENDER_RESULTS, 0)
        self.actions = dict.fromkeys(ACTION_RESULTS, 0)
        self.last_render = 0.0
        self.last_success = 0.0

    def rendered(self, result: str, *, now: float | None = None) -> None:
        stamp = time.time() if now is None else now
        self.renders[result] += 1
        self.last_render = stamp
        if result != "failed":
            self.last_success = stamp

    def acted(self, result: str) -> None:
        self.actions[result] += 1


class TemplatesMetrics:
    """A collector over every template's :class:`TemplateStats`."""

    def __init__(self, registry: Any, stats: Mapping[str, TemplateStats]) -> None:
        self._registry = registry
        self._stats = stats
        registry.register(self)
        self._registered = True

    def describe(self) -> Iterator[Any]:
        return self.collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        renders = CounterMetricFamily(
            "sidecar_templates_renders",
            _help("sidecar_templates_renders_total"),
            labels=["template", "result"],
        )
        actions = CounterMetricFamily(
            "sidecar_templates_actions",
            _help("sidecar_templates_actions_total"),
            labels=["template", "action", "result"],
        )
        last_render = GaugeMetricFamily(
            "sidecar_templates_last_render_timestamp_seconds",
            _help("sidecar_templates_last_render_timestamp_seconds"),
            labels=["template"],
        )
        last_success = GaugeMetricFamily(
            "sidecar_templates_last_success_timestamp_seconds",
            _help("sidecar_templates_last_success_timestamp_seconds"),
            labels=["template"],
        )
        for name, stats in self._stats.items():
            for result, count in stats.renders.items():
                renders.add_metric([name, result], count)
            if stats.action is not None:
                for result, count in stats.actions.items():
                    actions.add_metric([name, stats.action, result], count)
            last_render.add_metric([name], stats.last_render)
            last_success.add_metric([name], stats.last_success)
        yield from (renders, actions, last_render, last_success)

    def close(self) -> None:
        """Unregister the collector (idempotent)."""
        if self._registered:
            self._registered = False
            with contextlib.suppress(KeyError):
                self._registry.unregister(self)


def _help(name: str) -> str:
    return METRIC_DOCS[name][2].replace("`", "")
