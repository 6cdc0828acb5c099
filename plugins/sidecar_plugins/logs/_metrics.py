"""The logs plugin's Prometheus metrics: one collector that reads plain counters at scrape time.

Nothing is counted through prometheus_client on the hot path (a labelled ``inc()`` per line
would cost more than the rest of the pipeline); sources, the pipeline and the outputs keep plain
ints and this collector turns them into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["METRIC_DOCS", "LogsCollector"]

#: name → (type, labels, help); the reference page is generated from this table.
METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    "sidecar_logs_lines_in_total": (
        "counter",
        "source",
        "Lines read, per source (`stdout`, `stderr` or a file's path).",
    ),
    "sidecar_logs_bytes_in_total": ("counter", "source", "Bytes read (newlines included)."),
    "sidecar_logs_lines_truncated_total": (
        "counter",
        "source",
        "Lines longer than `max_line_bytes`, shipped cut and flagged `truncated`.",
    ),
    "sidecar_logs_invalid_utf8_total": (
        "counter",
        "-",
        "Lines that were not valid UTF-8 (shipped with U+FFFD replacements).",
    ),
    "sidecar_logs_records_total": ("counter", "-", "Records that left the processors."),
    "sidecar_logs_dropped_total": (
        "counter",
        "reason",
        "Records dropped: by a filter (the processor's name), `stream_overflow` (the core's "
        'output buffer was full with `stream_overflow = "drop"`), `rejected` (an output '
        "refused them for good) or `retries_exhausted`.",
    ),
    "sidecar_logs_processor_errors_total": (
        "counter",
        "processor",
        "Records a processor raised on (they went on unchanged, with `processor_error` set).",
    ),
    "sidecar_logs_records_out_total": ("counter", "output", "Records delivered, per output."),
    "sidecar_logs_bytes_out_total": ("counter", "output", "Encoded bytes delivered."),
    "sidecar_logs_retries_total": ("counter", "output", "Batches sent again after an error."),
    "sidecar_logs_output_errors_total": (
        "counter",
        "output, kind",
        "Failed sends by kind (`retryable`, `permanent`, ...).",
    ),
    "sidecar_logs_buffer_records": ("gauge", "output", "Records waiting for an output."),
    "sidecar_logs_buffer_bytes": ("gauge", "output", "Bytes waiting in memory."),
    "sidecar_logs_spool_bytes": ("gauge", "output", "Bytes spilled to disk."),
    "sidecar_logs_spool_errors_total": (
        "counter",
        "output",
        "Writes to the spool that failed (full disk, permissions): the pipeline waited.",
    ),
    "sidecar_logs_checkpoint_lag_bytes": (
        "gauge",
        "file",
        "Bytes of a tailed file read but not yet delivered by every output.",
    ),
    "sidecar_logs_files_watched": ("gauge", "-", "Files open for tailing."),
    "sidecar_logs_file_events_total": (
        "counter",
        "event",
        "Tailing events: `rotation`, `truncation`, `released`, `read_error`.",
    ),
}


def _help(name: str) -> str:
    return METRIC_DOCS[name][2]


class LogsCollector:
    """A prometheus_client collector over the plugin's counters (registered per plugin run)."""

    def __init__(
        self,
        pipeline_stats: Any,
        outputs: Callable[[], Sequence[tuple[str, Any]]],
        tail_stats: Callable[[], Mapping[str, int]],
        lag: Callable[[], Mapping[str, int]],
        processor_errors: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._processor_errors = processor_errors
        self._p = pipeline_stats
        self._outputs = outputs
        self._tail = tail_stats
        self._lag = lag

    def describe(self) -> list[Any]:
        return []  # families are dynamic; an empty describe keeps registration cheap

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = self._p

        def counter(name: str, labels: Sequence[str], values: Mapping[Any, int]) -> Any:
            family = CounterMetricFamily(name.removesuffix("_total"), _help(name), labels=labels)
            for key, value in values.items():
                family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
            return family

        def gauge(name: str, labels: Sequence[str], values: Mapping[Any, float]) -> Any:
            family = GaugeMetricFamily(name, _help(name), labels=labels)
            for key, value in values.items():
                family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
            return family

        yield counter("sidecar_logs_lines_in_total", ["source"], p.lines_in)
        yield counter("sidecar_logs_bytes_in_total", ["source"], p.bytes_in)
        yield counter("sidecar_logs_lines_truncated_total", ["source"], p.truncated)
        yield CounterMetricFamily(
            "sidecar_logs_invalid_utf8", _help("sidecar_logs_invalid_utf8_total"), p.invalid_utf8
        )
        yield CounterMetricFamily(
            "sidecar_logs_records", _help("sidecar_logs_records_total"), p.records
        )
        dropped = dict(p.dropped)
        outs = list(self._outputs())
        for _, delivery in outs:
            s = delivery.stats
            dropped["rejected"] = dropped.get("rejected", 0) + s.rejected_records
            exhausted = getattr(s, "retries_exhausted_records", 0)
            if exhausted:
                dropped["retries_exhausted"] = dropped.get("retries_exhausted", 0) + exhausted
        yield counter("sidecar_logs_dropped_total", ["reason"], dropped)
        yield counter(
            "sidecar_logs_processor_errors_total", ["processor"], self._processor_errors()
        )
        yield counter(
            "sidecar_logs_records_out_total", ["output"], {n: d.stats.records_out for n, d in outs}
        )
        yield counter(
            "sidecar_logs_bytes_out_total", ["output"], {n: d.stats.bytes_out for n, d in outs}
        )
        yield counter(
            "sidecar_logs_retries_total", ["output"], {n: d.stats.retries for n, d in outs}
        )
        yield counter(
            "sidecar_logs_output_errors_total",
            ["output", "kind"],
            {(n, kind): v for n, d in outs for kind, v in d.stats.errors.items()},
        )
        yield gauge(
            "sidecar_logs_buffer_records",
            ["output"],
            {n: d.stats.buffered_records for n, d in outs},
        )
        yield gauge(
            "sidecar_logs_buffer_bytes", ["output"], {n: d.stats.buffered_bytes for n, d in outs}
        )
        yield gauge(
            "sidecar_logs_spool_bytes", ["output"], {n: d.stats.spooled_bytes for n, d in outs}
        )
        yield counter(
            "sidecar_logs_spool_errors_total",
            ["output"],
            {n: d.stats.spool_errors for n, d in outs},
        )
        yield gauge("sidecar_logs_checkpoint_lag_bytes", ["file"], dict(self._lag()))
        tail = self._tail()
        yield GaugeMetricFamily(
            "sidecar_logs_files_watched",
            _help("sidecar_logs_files_watched"),
            tail.get("watched", 0),
        )
        yield counter(
            "sidecar_logs_file_events_total",
            ["event"],
            {e: tail.get(e, 0) for e in ("rotation", "truncation", "released", "read_error")},
        )
