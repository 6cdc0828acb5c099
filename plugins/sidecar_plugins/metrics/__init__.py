"""The ``metrics`` plugin: Prometheus metrics at ``GET /metrics``.

Serves the app's process metrics (its main process and its whole process tree), the runtime's
lifecycle metrics, whatever other plugins register on the shared registry, and the app's own
Prometheus endpoints merged in under collision-safe names. On in the embedded default config.
Importing this package is cheap: prometheus_client is imported on the first scrape.
"""

from __future__ import annotations

from ._config import AppMetricsEndpoint as AppMetricsEndpoint
from ._config import CollectorsConfig as CollectorsConfig
from ._config import MetricsConfig as MetricsConfig
from ._plugin import MetricsPlugin as MetricsPlugin

__all__ = ["AppMetricsEndpoint", "CollectorsConfig", "MetricsConfig", "MetricsPlugin"]
