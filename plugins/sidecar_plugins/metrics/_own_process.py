"""The ``process`` collector: sidecar-run's own ``process_*`` series.

The same families, HELP texts and values as prometheus_client's ``ProcessCollector`` (whose
series these are, and which dashboards know), read more cheaply: ``/proc/self/stat`` stays open
between scrapes (see ``_procfs``), the descriptor limit comes from ``getrlimit`` instead of
``/proc/self/limits``, and the descriptors are counted from the size of ``/proc/self/fd``
(Linux 6.2+) instead of listing it: ~0.03 ms a scrape instead of ~0.15 ms.
"""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING

from . import _procfs
from ._catalog import clone

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["OwnProcessCollector"]

#: (name, type, HELP), as prometheus_client's ProcessCollector has them, in its order.
_FAMILIES = (
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    ),
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."),
    ("process_open_fds", "gauge", "Number of open file descriptors."),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors."),
)


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


class OwnProcessCollector:
    """A prometheus_client collector for sidecar-run's own process (``process_*``)."""

    def __init__(self, fs: _procfs.ProcFS | None = None) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._fs = fs or _procfs.ProcFS(keep=1)
        self._protos = [
            (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_)
            for name, kind, help_ in _FAMILIES
        ]
        try:
            self._btime = _boot_time()
        except OSError:  # no /proc: no series, as prometheus_client does
            self._btime = 0.0

    def describe(self) -> list[Metric]:
        return [clone(proto) for proto in self._protos]

    def close(self) -> None:
        self._fs.close()

    def collect(self) -> list[Metric]:
        if not self._btime:
            return []
        vmem, rss, start, cpu, open_fds, max_fds = (clone(proto) for proto in self._protos)
        result: list[Metric] = []
        fs = self._fs
        try:
            st = fs.stat(os.getpid())
        except OSError:
            st = None
        finally:
            fs.end_scrape()
        if st is not None:
            vmem.add_metric([], float(st.vsize))
            rss.add_metric([], float(st.rss))
            start.add_metric([], st.start_ticks / _procfs.CLK_TCK + self._btime)
            cpu.add_metric([], st.utime + st.stime)
            result += (vmem, rss, start, cpu)
        try:
            fds = _own_fds()
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except OSError:
            return result
        open_fds.add_metric([], fds)
        max_fds.add_metric([], float("inf") if soft == resource.RLIM_INFINITY else float(soft))
        return [*result, open_fds, max_fds]


def _own_fds() -> int:
    """Descriptors open, counted as prometheus_client does: ``len(os.listdir("/proc/self/fd"))``,
    which includes the descriptor of that listing itself, hence the 1 added to the size."""
    size = os.stat("/proc/self/fd").st_size
    return size + 1 if size > 0 else len(os.listdir("/proc/self/fd"))
