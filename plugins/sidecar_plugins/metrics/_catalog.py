"""Every series the metrics plugin exports: name, type, unit, labels and meaning, in one place.

The collectors build their metric families from these specs and the reference page
(``docs/reference/metrics.md``) is rendered from them, so the two cannot drift. Names follow the
Prometheus conventions: one prefix per exporter (``sidecar_``), base units, ``_total`` on
counters, no unit-bearing labels. ``process_*`` is left to sidecar-run's own process (the
``process`` collector): the app's process series are ``sidecar_app_*`` for its main process and
``sidecar_app_tree_*`` for the sum over its process tree, so that neither is summed by mistake
into the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

    Family = CounterMetricFamily | GaugeMetricFamily

__all__ = ["COLLECTORS", "SPECS", "Spec", "by_name", "clone"]

F = TypeVar("F", bound="Metric")


class Spec(NamedTuple):
    """One exported metric family. ``name`` is the name in the text format (with ``_total``)."""

    collector: str
    name: str
    type: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""

    def family(self) -> Family:
        """An empty family for this spec (add samples with ``add_metric`` or ``add_sample``)."""
        proto = _PROTOTYPES.get(self.name)
        if proto is None:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

            kind: Any = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
            proto = kind(self.name, self.help, labels=self.labels or None, unit=self.unit)
            _PROTOTYPES[self.name] = proto
        return clone(proto)


_PROTOTYPES: dict[str, Family] = {}


def clone(proto: F) -> F:
    """An empty copy of the family ``proto``: its names were checked once, when it was built,
    and a scrape is hot (~1 us, where ``copy.copy`` takes ~4.5 us)."""
    kind = type(proto)
    family = kind.__new__(kind)
    family.__dict__.update(proto.__dict__)
    family.samples = []
    return family


#: Collector groups (``plugins.metrics.collectors.<name>``) and what each one covers.
COLLECTORS: dict[str, str] = {
    "app": "The app's main process (the one sidecar-run spawned), read from `/proc`.",
    "app_tree": (
        "The app's whole process tree: the main process, its descendants, and orphans "
        "sidecar-run adopted as subreaper that are still in the app's session. Gauges are "
        "sums over the live processes; counters also keep what exited descendants used, so "
        "they never go down while sidecar-run runs (see below)."
    ),
    "app_pss_uss": (
        "PSS, USS and swap from `/proc/<pid>/smaps_rollup`, for `app` and `app_tree` "
        "(whichever is on). Off by default: the kernel walks every mapping to produce them, "
        "about 0.25 ms per process."
    ),
    "runtime": "sidecar-run's view of the app's lifecycle, its output, and the plugins.",
    "process": (
        "sidecar-run's own process: the series of prometheus_client's `ProcessCollector` "
        "(`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from "
        "`/proc/self` with files kept open."
    ),
    "python": (
        "sidecar-run's interpreter, from prometheus_client's `PlatformCollector` and "
        "`GCCollector` (`python_info`, `python_gc_*`)."
    ),
    "metrics": "The metrics plugin itself, and the app endpoints it merges. Always on.",
}

_MODE = ("mode",)
_KIND = ("kind",)


def _process(collector: str, prefix: str, whose: str) -> list[Spec]:
    return [
        Spec(
            collector,
            f"{prefix}cpu_seconds_total",
            "counter",
            f"CPU time used by {whose}, by `mode` (`user`, `system`).",
            _MODE,
            "seconds",
        ),
        Spec(
            collector,
            f"{prefix}resident_memory_bytes",
            "gauge",
            f"Resident set size (RSS) of {whose}.",
            unit="bytes",
        ),
        Spec(
            collector,
            f"{prefix}virtual_memory_bytes",
            "gauge",
            f"Virtual memory size of {whose}.",
            unit="bytes",
        ),
        Spec(collector, f"{prefix}open_fds", "gauge", f"Open file descriptors of {whose}."),
        Spec(collector, f"{prefix}threads", "gauge", f"Threads of {whose}."),
        Spec(
            collector,
            f"{prefix}io_read_bytes_total",
            "counter",
            f"Bytes {whose} read through read(2)-like calls, from files, pipes and sockets "
            "(`rchar`).",
            unit="bytes",
        ),
        Spec(
            collector,
            f"{prefix}io_write_bytes_total",
            "counter",
            f"Bytes {whose} wrote through write(2)-like calls (`wchar`).",
            unit="bytes",
        ),
        Spec(
            collector,
            f"{prefix}storage_read_bytes_total",
            "counter",
            f"Bytes {whose} caused to be fetched from the storage layer (`read_bytes`).",
            unit="bytes",
        ),
        Spec(
            collector,
            f"{prefix}storage_write_bytes_total",
            "counter",
            f"Bytes {whose} caused to be sent to the storage layer (`write_bytes`).",
            unit="bytes",
        ),
        Spec(
            collector,
            f"{prefix}context_switches_total",
            "counter",
            f"Context switches of {whose}, by `kind` (`voluntary`, `involuntary`); counted "
            "for each process's main thread, as `/proc/<pid>/status` reports them.",
            _KIND,
        ),
        Spec(
            collector,
            f"{prefix}page_faults_total",
            "counter",
            f"Page faults of {whose}, by `kind` (`minor`, `major`).",
            _KIND,
        ),
    ]


def _memory_detail(prefix: str, whose: str) -> list[Spec]:
    return [
        Spec(
            "app_pss_uss",
            f"{prefix}proportional_memory_bytes",
            "gauge",
            f"Proportional set size (PSS) of {whose}: shared pages divided among their users.",
            unit="bytes",
        ),
        Spec(
            "app_pss_uss",
            f"{prefix}unique_memory_bytes",
            "gauge",
            f"Unique set size (USS) of {whose}: private pages, freed if it exits.",
            unit="bytes",
        ),
        Spec(
            "app_pss_uss",
            f"{prefix}swap_memory_bytes",
            "gauge",
            f"Swapped-out memory of {whose}.",
            unit="bytes",
        ),
    ]


_MAIN = "the app's main process"
_TREE = "the app's process tree"

SPECS: list[Spec] = [
    *_process("app", "sidecar_app_", _MAIN),
    Spec("app", "sidecar_app_max_fds", "gauge", "Soft limit of open file descriptors."),
    Spec(
        "app_tree",
        "sidecar_app_tree_processes",
        "gauge",
        "Processes in the app's tree, the main process included (zombies too).",
    ),
    Spec(
        "app_tree",
        "sidecar_app_tree_zombie_processes",
        "gauge",
        "Processes in the app's tree that exited and were not yet waited for by their parent.",
    ),
    *_process("app_tree", "sidecar_app_tree_", _TREE),
    *_memory_detail("sidecar_app_", _MAIN),
    *_memory_detail("sidecar_app_tree_", _TREE),
    Spec(
        "runtime",
        "sidecar_build_info",
        "gauge",
        "Always 1; `version` is sidecar-run's.",
        ("version",),
    ),
    Spec(
        "runtime",
        "sidecar_start_time_seconds",
        "gauge",
        "When sidecar-run started, Unix time.",
        unit="seconds",
    ),
    Spec("runtime", "sidecar_shutting_down", "gauge", "1 once the graceful shutdown has begun."),
    Spec("runtime", "sidecar_app_up", "gauge", "1 while the app is `RUNNING`, else 0."),
    Spec(
        "runtime",
        "sidecar_app_state",
        "gauge",
        "1 for the app's current state, 0 for the others (every state is listed).",
        ("state",),
    ),
    Spec("runtime", "sidecar_app_ready", "gauge", "1 while the app is ready (`/readyz`), else 0."),
    Spec(
        "runtime",
        "sidecar_app_start_time_seconds",
        "gauge",
        "When the app's current (or last) process was spawned, Unix time.",
        unit="seconds",
    ),
    Spec("runtime", "sidecar_app_starts_total", "counter", "Processes of the app spawned."),
    Spec(
        "runtime",
        "sidecar_app_restarts_total",
        "counter",
        "Times the app was started again after an exit.",
    ),
    Spec(
        "runtime",
        "sidecar_app_failed_starts_total",
        "counter",
        "Processes of the app that exited before `restart.start_seconds` and were retried.",
    ),
    Spec(
        "runtime",
        "sidecar_app_exits_total",
        "counter",
        "Exits of the app's process, by exit `code`, or by `signal` (e.g. `KILL`) when a "
        "signal killed it; each series has one of the two labels.",
        ("code", "signal"),
    ),
    Spec(
        "runtime",
        "sidecar_app_start_duration_seconds",
        "gauge",
        "Time from the latest spawn to `RUNNING` (absent until the app got there once).",
        unit="seconds",
    ),
    Spec(
        "runtime",
        "sidecar_app_ready_duration_seconds",
        "gauge",
        "Time from the spawn of the latest process that became ready to its readiness "
        "(absent until the app was ready once).",
        unit="seconds",
    ),
    Spec(
        "runtime",
        "sidecar_orphans_reaped_total",
        "counter",
        "Orphaned descendants of the app that sidecar-run reaped (as PID 1 or subreaper).",
    ),
    Spec(
        "runtime",
        "sidecar_config_reloads_total",
        "counter",
        "Reloads of sidecar-run's own configuration (SIGHUP, `POST /reload`), by `result` "
        "(`success`, `failure`).",
        ("result",),
    ),
    Spec(
        "runtime",
        "sidecar_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration was last reloaded successfully (0 until then).",
        unit="seconds",
    ),
    Spec(
        "runtime",
        "sidecar_output_bytes_total",
        "counter",
        "Bytes the app wrote, by `stream` (`stdout`, `stderr`).",
        ("stream",),
        "bytes",
    ),
    Spec(
        "runtime",
        "sidecar_output_lines_total",
        "counter",
        "Lines the app wrote, by `stream`.",
        ("stream",),
    ),
    Spec(
        "runtime",
        "sidecar_output_dropped_lines_total",
        "counter",
        "Output lines dropped at full plugin subscriptions (the app's own output is never "
        "dropped).",
    ),
    Spec(
        "runtime",
        "sidecar_plugin_state",
        "gauge",
        "1 for each plugin's current `state` (`starting`, `running`, `backoff`, `failed`, "
        "`finished`, `stopped`), 0 for the others.",
        ("plugin", "state"),
    ),
    Spec(
        "runtime",
        "sidecar_plugin_restarts_total",
        "counter",
        "Restarts of each plugin after a crash.",
        ("plugin",),
    ),
    Spec(
        "metrics",
        "sidecar_metrics_vanished_processes_total",
        "counter",
        "Processes of the app's tree that exited while a scrape was reading them (normal for "
        "short-lived children; they are left out of that scrape).",
    ),
    Spec(
        "metrics",
        "sidecar_metrics_errors_total",
        "counter",
        "Failures of a `collector` during a scrape (an unreadable `/proc` file, a collector "
        "that raised); the scrape goes on without what failed.",
        ("collector",),
    ),
    Spec(
        "metrics",
        "sidecar_app_metrics_up",
        "gauge",
        "1 if the app endpoint `source` was scraped and merged in this scrape, else 0.",
        ("source",),
    ),
    Spec(
        "metrics",
        "sidecar_app_metrics_scrape_duration_seconds",
        "gauge",
        "How long fetching and parsing the app endpoint `source` took in this scrape.",
        ("source",),
        "seconds",
    ),
    Spec(
        "metrics",
        "sidecar_app_metrics_scrape_failures_total",
        "counter",
        "Failed scrapes of the app endpoint `source`, by `reason`: `timeout`, `connection`, "
        "`http_status`, `too_large`, `parse`.",
        ("source", "reason"),
    ),
    Spec(
        "metrics",
        "sidecar_app_metrics_samples",
        "gauge",
        "Samples merged from the app endpoint `source` in this scrape.",
        ("source",),
    ),
    Spec(
        "metrics",
        "sidecar_app_metrics_dropped_families",
        "gauge",
        "Metric families of the app endpoint `source` left out of this scrape: their name "
        "collided with another series, or they were malformed.",
        ("source",),
    ),
]

_BY_NAME = {spec.name: spec for spec in SPECS}


def by_name(name: str) -> Spec:
    """The spec of an exported family (KeyError for a name not in the catalog)."""
    return _BY_NAME[name]
