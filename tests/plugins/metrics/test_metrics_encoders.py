"""The plugin's own encoders and collectors give exactly what prometheus_client would."""

from __future__ import annotations

import functools
import inspect

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    Summary,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.samples import Exemplar
from sidecar_plugins.metrics._openmetrics import FastOpenMetrics
from sidecar_plugins.metrics._own_process import OwnProcessCollector

pytestmark = pytest.mark.skipif(
    "escaping" not in inspect.signature(om.generate_latest).parameters,
    reason="this prometheus_client has no escaping option; the plugin uses its encoder as is",
)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _families() -> list[Metric]:
    """Plain and awkward families: escaping, Inf/NaN, histograms, info, enum, exemplars..."""
    r = CollectorRegistry()
    c = Counter("reqs", 'Requests \\ with "quotes"\nand newline', ["a", "b"], registry=r)
    c.labels('x"y', "z\\n\n").inc(3.5)
    c.labels("1", "2").inc()
    Gauge("temp_celsius", "T", unit="celsius", registry=r).set(float("inf"))
    Gauge("nanny", "N", registry=r).set(float("nan"))
    Gauge("negg", "N", registry=r).set(-1234567890123.5)
    h = Histogram("lat_seconds", "L", registry=r)
    h.observe(0.3)
    h.observe(12)
    Summary("sz", "S", ["q"], registry=r).labels("v").observe(7)
    Info("build", "B", registry=r).info({"version": "1.2", "z": "ü"})
    Enum("st", "E", states=["a", "b"], registry=r)
    ProcessCollector(registry=r)
    PlatformCollector(registry=r)
    GCCollector(registry=r)
    families = list(r.collect())
    with_exemplar = CounterMetricFamily("withex", "x")
    with_exemplar.add_metric([], 1, exemplar=Exemplar({"t": "1"}, 2.0))
    with_timestamp = GaugeMetricFamily("withts", "x")
    with_timestamp.add_metric([], 1, timestamp=123.5)
    families += [with_exemplar, with_timestamp]
    for name, labels, value in (
        ("weird:name", {"__reserved": "v"}, 1.0),
        ("dotted.name", {"ok": "v"}, 1.0),
        ("lab", {"bad.label": "v", "a": "b"}, 1.0),
        ("boolv", {}, True),
        ("intbig", {}, 10**20),
    ):
        metric = Metric(name, "w", "gauge")
        metric.add_sample(name, labels, value)
        families.append(metric)
    return families


def test_fast_openmetrics_is_byte_identical_to_prometheus_client() -> None:
    """FastOpenMetrics writes exactly what prometheus_client's OpenMetrics encoder writes."""
    reference = functools.partial(om.generate_latest, escaping=om.ALLOWUTF8)
    fast = FastOpenMetrics(reference)
    families = _families()
    assert fast(families) == reference(_Families(families))


@pytest.mark.parametrize("value", [{"k": 1}, "not a number"])
def test_fast_openmetrics_raises_where_prometheus_client_raises(value: object) -> None:
    """A malformed family fails in both encoders (the scrape then drops and counts it)."""
    reference = functools.partial(om.generate_latest, escaping=om.ALLOWUTF8)
    bad = Metric("bad", "b", "gauge")
    if isinstance(value, dict):
        bad.add_sample("bad", value, 1)
    else:
        bad.add_sample("bad", {}, value)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the same failure, whatever its type
        reference(_Families([bad]))
    with pytest.raises(Exception):  # noqa: B017, PT011
        FastOpenMetrics(reference)([bad])


def test_own_process_collector_matches_prometheus_client() -> None:
    """OwnProcessCollector: the same families, HELP, types and (but for CPU time) values."""
    ours = OwnProcessCollector()
    try:
        mine = ours.collect()
        theirs = list(ProcessCollector(registry=None).collect())
    finally:
        ours.close()
    assert [(f.name, f.type, f.documentation) for f in mine] == [
        (f.name, f.type, f.documentation) for f in theirs
    ]
    for a, b in zip(mine, theirs, strict=True):
        (sample_a,) = a.samples
        (sample_b,) = b.samples
        if a.name == "process_cpu_seconds":
            assert abs(sample_a.value - sample_b.value) < 0.5
        elif a.name in ("process_resident_memory_bytes", "process_virtual_memory_bytes"):
            assert abs(sample_a.value - sample_b.value) < 4 << 20
        else:
            assert sample_a.value == sample_b.value, a.name
