"""The proxy's Prometheus metrics, on the runtime's shared registry.

Per request the engine touches only pre-bound children (one counter, two histograms); gauges
(in flight, open connections, circuit breakers, ejected endpoints, certificate expiry) are
read at scrape time by one collector, so they cost nothing per request. Created on plugin start
and unregistered by :meth:`ProxyMetrics.close` (the plugin may be restarted).
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["METRIC_DOCS", "Histogram", "ProxyMetrics", "RouteStats"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"))
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

#: name → (type, labels, help); the reference page is generated from this table.
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "sidecar_proxy_requests_total": (
        "counter",
        "route, method, code_class",
        "Requests answered, by route (`unrouted` for 404s without a route), method (`other` "
        "for unusual ones) and status class (`2xx`...; `4xx` also counts 499, client gone).",
    ),
    "sidecar_proxy_request_duration_seconds": (
        "histogram",
        "route",
        "From the request head's arrival to the last byte of the response.",
    ),
    "sidecar_proxy_upstream_duration_seconds": (
        "histogram",
        "upstream",
        "From sending a try's request head to the upstream's response head.",
    ),
    "sidecar_proxy_requests_in_flight": ("gauge", "-", "Requests being handled now."),
    "sidecar_proxy_upstream_connect_errors_total": (
        "counter",
        "upstream",
        "Connections to an upstream endpoint that failed or timed out.",
    ),
    "sidecar_proxy_retries_total": ("counter", "upstream", "Tries after the first one."),
    "sidecar_proxy_circuit_open": (
        "gauge",
        "upstream, threshold",
        "1 while a circuit-breaker threshold (`connections`, `pending_requests`, `requests`, "
        "`retries`) is reached.",
    ),
    "sidecar_proxy_overflows_total": (
        "counter",
        "upstream, threshold",
        "Requests refused (503, `x-sidecar-overloaded: true`) because a threshold was reached.",
    ),
    "sidecar_proxy_outlier_ejections_total": (
        "counter",
        "upstream",
        "Endpoints taken out of service by outlier detection.",
    ),
    "sidecar_proxy_outlier_ejected": (
        "gauge",
        "upstream",
        "Endpoints out of service now.",
    ),
    "sidecar_proxy_rate_limited_total": (
        "counter",
        "-",
        "Requests answered 429 by the local rate limit.",
    ),
    "sidecar_proxy_tls_reloads_total": (
        "counter",
        "listener, outcome",
        "Certificate reloads of a TLS listener (`success`, `failure`: old ones kept).",
    ),
    "sidecar_proxy_tls_certificate_expiry_timestamp_seconds": (
        "gauge",
        "listener",
        "When the serving certificate expires (Unix time).",
    ),
    "sidecar_proxy_tls_handshake_errors_total": (
        "counter",
        "listener",
        "TLS handshakes that failed (bad client certificate, old protocol, timeout...).",
    ),
    "sidecar_proxy_bad_requests_total": (
        "counter",
        "reason",
        "Requests refused before routing: `malformed`, `header_timeout`, `header_too_large`, "
        "`uri_too_long`, `body_too_large`, `bad_host`, `bad_target`, and connections refused "
        "as `too_many_connections`.",
    ),
    "sidecar_proxy_upstream_connections": (
        "gauge",
        "upstream, state",
        "Open upstream connections: `active` (carrying a request) and `idle` (pooled).",
    ),
}


def _help(name: str) -> str:
    return METRIC_DOCS[name][2].replace("`", "")


class Histogram:
    """A histogram as plain numbers: observing is a bisect and two additions."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as the exposition wants them."""
        out, total = [], 0
        for bound, count in zip((*_BUCKETS, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


class RouteStats:
    """A route's counters by (method, status) and its duration histogram, as plain numbers."""

    __slots__ = ("counts", "duration", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[tuple[str, int], int] = {}
        self.duration = Histogram()

    def record(self, method: str, status: int, duration: float) -> None:
        key = (method, status // 100)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        histogram = self.duration  # Histogram.observe, inlined: this runs for every request
        histogram.counts[bisect_left(_BUCKETS, duration)] += 1
        histogram.sum += duration

    def by_label(self) -> dict[tuple[str, str], int]:
        """Counts by (method label, code class label)."""
        out: dict[tuple[str, str], int] = {}
        for (method, klass), count in self.counts.items():
            key = (
                method if method in _METHODS else "other",
                _CLASSES[min(max(klass, 1), 5) - 1],
            )
            out[key] = out.get(key, 0) + count
        return out


class ProxyMetrics:
    """Every proxy collector; ``sources`` supply the scrape-time gauges."""

    def __init__(
        self,
        registry: Any,
        *,
        in_flight: Callable[[], int],
        clusters: Callable[[], Sequence[Any]],
        stores: Callable[[], Sequence[tuple[str, Any]]],
    ) -> None:
        self._registry = registry
        self.routes: dict[str, RouteStats] = {}
        self.upstreams: dict[str, Histogram] = {}
        self.connect_errors = self._counter(
            "sidecar_proxy_upstream_connect_errors_total", ["upstream"]
        )
        self.retries = self._counter("sidecar_proxy_retries_total", ["upstream"])
        self.overflows = self._counter("sidecar_proxy_overflows_total", ["upstream", "threshold"])
        self.ejections = self._counter("sidecar_proxy_outlier_ejections_total", ["upstream"])
        self.rate_limited = self._counter("sidecar_proxy_rate_limited_total", [])
        self.handshake_errors = self._counter(
            "sidecar_proxy_tls_handshake_errors_total", ["listener"]
        )
        self.bad_requests = self._counter("sidecar_proxy_bad_requests_total", ["reason"])
        self._gauges = _Gauges(self, in_flight, clusters, stores)
        self._collectors: list[Any] = [
            self.connect_errors,
            self.retries,
            self.overflows,
            self.ejections,
            self.rate_limited,
            self.handshake_errors,
            self.bad_requests,
            self._gauges,
        ]
        registered = []
        try:
            for collector in self._collectors:
                registry.register(collector)
                registered.append(collector)
        except Exception:
            for collector in registered:
                registry.unregister(collector)
            raise

    @staticmethod
    def _counter(name: str, labels: list[str]) -> Any:
        from prometheus_client import Counter

        return Counter(name.removesuffix("_total"), _help(name), labels, registry=None)

    def route_stats(self, route: str) -> RouteStats:
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats(route)
        return stats

    def upstream_histogram(self, upstream: str) -> Histogram:
        histogram = self.upstreams.get(upstream)
        if histogram is None:
            histogram = self.upstreams[upstream] = Histogram()
        return histogram

    def close(self) -> None:
        """Unregister every collector (idempotent)."""
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self._registry.unregister(collector)
        self._collectors = []


class _Gauges:
    """Everything read at scrape time: request counts and durations, gauges, TLS reloads."""

    def __init__(
        self,
        metrics: ProxyMetrics,
        in_flight: Callable[[], int],
        clusters: Callable[[], Sequence[Any]],
        stores: Callable[[], Sequence[tuple[str, Any]]],
    ) -> None:
        self._metrics = metrics
        self._in_flight = in_flight
        self._clusters = clusters
        self._stores = stores

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def gauge(name: str, labels: list[str]) -> Any:
            return GaugeMetricFamily(name, _help(name), labels=labels)

        requests = CounterMetricFamily(
            "sidecar_proxy_requests",
            _help("sidecar_proxy_requests_total"),
            labels=["route", "method", "code_class"],
        )
        duration = HistogramMetricFamily(
            "sidecar_proxy_request_duration_seconds",
            _help("sidecar_proxy_request_duration_seconds"),
            labels=["route"],
        )
        for name, stats in sorted(self._metrics.routes.items()):
            for (method, klass), count in sorted(stats.by_label().items()):
                requests.add_metric([name, method, klass], count)
            duration.add_metric([name], stats.duration.buckets(), stats.duration.sum)
        yield requests
        yield duration
        upstream = HistogramMetricFamily(
            "sidecar_proxy_upstream_duration_seconds",
            _help("sidecar_proxy_upstream_duration_seconds"),
            labels=["upstream"],
        )
        for name, histogram in sorted(self._metrics.upstreams.items()):
            upstream.add_metric([name], histogram.buckets(), histogram.sum)
        yield upstream
        flight = gauge("sidecar_proxy_requests_in_flight", [])
        flight.add_metric([], self._in_flight())
        yield flight
        circuit = gauge("sidecar_proxy_circuit_open", ["upstream", "threshold"])
        ejected = gauge("sidecar_proxy_outlier_ejected", ["upstream"])
        connections = gauge("sidecar_proxy_upstream_connections", ["upstream", "state"])
        for cluster in self._clusters():
            for threshold, is_open in sorted(cluster.breaker.open.items()):
                circuit.add_metric([cluster.name, threshold], float(is_open))
            now = cluster.loop.time()
            count = len(cluster.detector.ejected(now)) if cluster.detector is not None else 0
            ejected.add_metric([cluster.name], count)
            idle = sum(len(e.idle) for e in cluster.endpoints.values())
            connections.add_metric([cluster.name, "idle"], idle)
            connections.add_metric([cluster.name, "active"], cluster.open_connections - idle)
        yield circuit
        yield ejected
        yield connections
        reloads = CounterMetricFamily(
            "sidecar_proxy_tls_reloads",
            _help("sidecar_proxy_tls_reloads_total"),
            labels=["listener", "outcome"],
        )
        expiry = gauge("sidecar_proxy_tls_certificate_expiry_timestamp_seconds", ["listener"])
        for name, store in self._stores():
            reloads.add_metric([name, "success"], store.reloads)
            reloads.add_metric([name, "failure"], store.reload_errors)
            expiry.add_metric([name], store.not_after)
        yield reloads
        yield expiry
