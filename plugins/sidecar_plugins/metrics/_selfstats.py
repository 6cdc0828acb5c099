"""The metrics plugin's own trouble: counters, and log events that fire on change, not per scrape.

A scrape that cannot read something goes on without it; what failed is counted
(``sidecar_metrics_errors_total{collector}``) and logged once when it starts failing
(``metrics_collector_failed``) and once when it works again (``metrics_collector_recovered``).
Prometheus scrapes every few seconds: one line per scrape would bury every other log line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._catalog import by_name

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["SelfStats"]


class SelfStats:
    """Counts failures per collector and vanished processes; logs state changes only."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.vanished = 0
        self.errors: dict[str, int] = {}
        self._failing: dict[str, str] = {}
        #: collectors of other plugins that raised in the latest scrape (by class name)
        self.foreign_failing: set[str] = set()

    def failed(self, collector: str, error: str, **fields: Any) -> None:
        """Count one failure of ``collector``; log it if it is new or a different error."""
        self.errors[collector] = self.errors.get(collector, 0) + 1
        if self._failing.get(collector) != error:
            self._failing[collector] = error
            self._log.warning(
                "metrics_collector_failed", collector=collector, error=error, **fields
            )

    def succeeded(self, collector: str) -> None:
        """``collector`` ran without failure; log the recovery if it was failing."""
        if self._failing.pop(collector, None) is not None:
            self._log.info("metrics_collector_recovered", collector=collector)

    def process_vanished(self, pid: int) -> None:
        self.vanished += 1
        self._log.debug("app_process_vanished", pid=pid)

    def describe(self) -> list[Metric]:
        return [
            by_name("sidecar_metrics_vanished_processes_total").family(),
            by_name("sidecar_metrics_errors_total").family(),
        ]

    def collect(self) -> list[Metric]:
        vanished = by_name("sidecar_metrics_vanished_processes_total").family()
        errors = by_name("sidecar_metrics_errors_total").family()
        vanished.add_metric([], self.vanished)
        for collector, count in sorted(self.errors.items()):
            errors.add_metric([collector], count)
        return [vanished, errors]
