"""Content negotiation, gzip and constant labels of /metrics replies (pure functions)."""

from __future__ import annotations

import gzip

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sidecar_plugins.metrics._exposition import (
    OPENMETRICS,
    TEXT,
    encode,
    negotiate,
    wants_gzip,
    with_const_labels,
)

from tests.plugins.metrics.metrics_fakes import samples

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
    "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT),
        ("", TEXT),
        ("*/*", TEXT),
        ("text/plain", TEXT),
        ("text/plain;version=0.0.4", TEXT),
        (PROMETHEUS_2, OPENMETRICS),
        (PROMETHEUS_3, OPENMETRICS),
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=0.0.1", OPENMETRICS),
        ("application/openmetrics-text;version=2.0.0, text/plain", TEXT),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.1", TEXT),
        ("text/plain;q=0.1, application/openmetrics-text;q=0.9", OPENMETRICS),
        ("application/openmetrics-text;q=0, text/plain", TEXT),
        ("application/json", TEXT),
        ("application/openmetrics-text;q=oops, text/plain", TEXT),
        (",;,", TEXT),
    ],
)
def test_negotiation(accept: str | None, expected: str) -> None:
    """OpenMetrics when the client prefers it (q values honoured), else the text format."""
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("*", True),
        ("identity", False),
        ("x-gzip", True),
    ],
)
def test_gzip_when_asked(header: str | None, expected: bool) -> None:
    """gzip only when Accept-Encoding allows it."""
    assert wants_gzip(header) is expected


def fixture_families() -> list[Metric]:
    """A gauge without labels and a counter with labels."""
    gauge = GaugeMetricFamily("queue_depth", "Items.", value=3)
    counter = CounterMetricFamily("jobs_total", "Jobs.", labels=["app", "kind"])
    counter.add_metric(["legacy", "a"], 4)
    return [gauge, counter]


def test_const_labels_on_every_series_and_clashes_exported() -> None:
    """Every sample gets the labels; an existing label of that name becomes exported_<name>."""
    original = fixture_families()
    labelled = with_const_labels(original, {"app": "shop", "pod": "p-1"})
    got = samples(encode(labelled, TEXT, compress=False))
    assert got["queue_depth"] == [({"app": "shop", "pod": "p-1"}, 3.0)]
    assert got["jobs_total"] == [
        ({"app": "shop", "pod": "p-1", "exported_app": "legacy", "kind": "a"}, 4.0)
    ]
    assert original[1].samples[0].labels == {"app": "legacy", "kind": "a"}  # copies, not edits


@pytest.mark.parametrize("content_type", [TEXT, OPENMETRICS])
def test_encode_round_trips_in_both_formats(content_type: str) -> None:
    """What is encoded parses back strictly, compressed or not."""
    plain = encode(fixture_families(), content_type, compress=False)
    packed = encode(fixture_families(), content_type, compress=True)
    assert gzip.decompress(packed) == plain
    got = samples(plain, content_type)
    assert got["jobs_total"] == [({"app": "legacy", "kind": "a"}, 4.0)]
    assert plain.endswith(b"# EOF\n") is (content_type == OPENMETRICS)
