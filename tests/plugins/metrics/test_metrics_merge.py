"""Merging the app's families: prefixes, collisions, malformed input, and valid output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sidecar_plugins.metrics._app_scrape import (
    AppMetricsMerger,
    ScrapeFailure,
    SourceResult,
    family_names,
    parse_body,
)
from sidecar_plugins.metrics._config import Source
from sidecar_plugins.metrics._exposition import OPENMETRICS, TEXT, encode

from tests.plugins.metrics.metrics_fakes import (
    GOOD_OM,
    GOOD_TEXT,
    OM_CT,
    TEXT_CT,
    promtool_check,
    samples,
)


class RecordingLog:
    """A logger that keeps the events it is given: (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Any:
        return self._record(level)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.events if name == event]


def source(name: str = "app", prefix: str | None = None) -> Source:
    """An endpoint as the config resolves it."""
    return Source(
        name, f"{name}_" if prefix is None else prefix, "http://127.0.0.1:1/", 1.0, 1 << 20
    )


def merge(
    bodies: list[tuple[Source, bytes, str]], native: Sequence[Metric] = ()
) -> tuple[list[Metric], RecordingLog, AppMetricsMerger]:
    """Merge parsed bodies beside ``native`` families as one scrape would."""
    log = RecordingLog()
    merger = AppMetricsMerger([s for s, _, _ in bodies], log, lambda: True)
    results = [SourceResult(s, parse_body(body, ct), 0.01) for s, body, ct in bodies]
    taken: set[str] = set()
    for family in native:
        taken |= family_names(family)
    return merger.merge(results, taken), log, merger


def test_families_are_prefixed_and_keep_labels() -> None:
    """Every family of endpoint 'app' is served as app_<name>, labels and values kept."""
    merged, _, _ = merge([(source(), GOOD_TEXT, TEXT_CT)])
    got = samples(encode(merged, TEXT, compress=False))
    assert got["app_http_requests_total"] == [
        ({"code": "200", "path": "/"}, 7.0),
        ({"code": "500", "path": "/"}, 1.0),
    ]
    assert got["app_process_cpu_seconds_total"] == [({}, 1.5)]
    assert got["sidecar_app_metrics_up"] == [({"source": "app"}, 1.0)]
    assert got["sidecar_app_metrics_samples"] == [({"source": "app"}, 4.0)]
    assert got["sidecar_app_metrics_dropped_families"] == [({"source": "app"}, 0.0)]
    failures = {lbl["reason"]: v for lbl, v in got["sidecar_app_metrics_scrape_failures_total"]}
    assert failures == dict.fromkeys(
        ["timeout", "connection", "http_status", "too_large", "parse"], 0
    )


def test_collisions_are_left_out_counted_and_logged_once() -> None:
    """With prefix "", the app's process_* collides with sidecar-run's: dropped, not merged."""
    native = [GaugeMetricFamily("queue_depth", "ours", value=1)]
    bare = source("raw", prefix="")
    body = GOOD_TEXT + b"# TYPE queue_depth_total counter\nqueue_depth_total 2\n"
    merged, log, merger = merge([(bare, body, TEXT_CT)], native)
    names = {f.name for f in merged}
    assert "http_requests" in names  # counters are named without _total inside
    assert "queue_depth" not in names
    got = samples(encode([*native, *merged], TEXT, compress=False))
    assert got["queue_depth"] == [({}, 1.0)]  # ours, untouched
    # the app's queue_depth gauge and its queue_depth_total counter both claim queue_depth
    assert got["sidecar_app_metrics_dropped_families"] == [({"source": "raw"}, 2.0)]
    [event] = log.named("app_metrics_families_dropped")
    assert event["families"] == ["queue_depth"]
    # the same collision on the next scrape is counted again but not logged again
    results = [SourceResult(bare, parse_body(body, TEXT_CT), 0.01)]
    merger.merge(results, set().union(*(family_names(f) for f in native)))
    assert len(log.named("app_metrics_families_dropped")) == 1


def test_two_endpoints_with_the_same_names_never_merge_into_one_family() -> None:
    """Endpoints get their own prefixes; with the same prefix the second one's family is dropped."""
    merged, _, _ = merge([(source("a"), GOOD_TEXT, TEXT_CT), (source("b"), GOOD_TEXT, TEXT_CT)])
    got = samples(encode(merged, TEXT, compress=False))
    assert ({}, 3.0) in got["a_queue_depth"]
    assert ({}, 3.0) in got["b_queue_depth"]
    merged, _, _ = merge(
        [
            (source("a", prefix="x_"), GOOD_TEXT, TEXT_CT),
            (source("b", prefix="x_"), GOOD_TEXT, TEXT_CT),
        ]
    )
    got = samples(encode(merged, TEXT, compress=False))
    assert got["x_queue_depth"] == [({}, 3.0)]
    dropped = {lbl["source"]: v for lbl, v in got["sidecar_app_metrics_dropped_families"]}
    assert dropped == {"a": 0.0, "b": 3.0}


def test_malformed_families_are_split_or_dropped() -> None:
    """Buckets without le, summaries without quantile split; duplicates are left out."""
    body = b"""\
# TYPE h histogram
h_bucket 1
h_sum 2
# TYPE s summary
s 5
s_count 1
dup 1
dup 2
# TYPE g gauge
g{a="1"} 1
g{a="1"} 2
"""
    merged, _, _ = merge([(source(), body, TEXT_CT)])
    by_name = {f.name: f for f in merged}
    assert by_name["app_h_bucket"].type == "unknown"
    assert by_name["app_h_sum"].type == "unknown"
    assert by_name["app_s"].type == "unknown"
    assert len(by_name["app_g"].samples) == 1
    assert len(by_name["app_dup"].samples) == 1
    for content_type in (TEXT, OPENMETRICS):
        assert samples(encode(merged, content_type, compress=False), content_type)


def test_reserved_label_names_are_left_out() -> None:
    """A family with a ``__`` label (the parsers refuse them; a bug could not) is dropped."""
    family = Metric("odd", "Odd.", "gauge")
    family.add_sample("odd", {"__meta": "x"}, 1)
    log = RecordingLog()
    merger = AppMetricsMerger([source()], log, lambda: True)
    merged = merger.merge([SourceResult(source(), [family], 0.01)], set())
    assert "app_odd" not in {f.name for f in merged}
    assert log.named("app_metrics_families_dropped")[0]["families"] == ["app_odd"]


def test_openmetrics_input_merges_into_valid_output_of_both_formats() -> None:
    """OpenMetrics counters, info, units and histograms survive renaming in both formats."""
    merged, _, _ = merge([(source(), GOOD_OM, OM_CT)])
    om = encode(merged, OPENMETRICS, compress=False)
    got = samples(om, OPENMETRICS)  # the strict OpenMetrics parser accepts it
    assert got["app_jobs_total"] == [({"kind": "a"}, 4.0)]
    assert got["app_build_info"] == [({"version": "1.2"}, 1.0)]
    assert got["app_latency_seconds_count"] == [({}, 2.0)]
    assert b"# UNIT app_latency_seconds seconds" in om
    text = encode(merged, TEXT, compress=False)
    assert samples(text)["app_jobs_total"] == [({"kind": "a"}, 4.0)]
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"\xff\xfe metrics", TEXT_CT, "not UTF-8"),
        (b"<html><body>502 Bad Gateway</body></html>", "text/html", "invalid metric name"),
        (b'{"requests": 7}', "application/json", None),
        (b"requests seven\n", TEXT_CT, "could not convert"),
        (GOOD_OM.replace(b"# EOF\n", b""), OM_CT, "EOF"),
    ],
)
def test_garbage_is_a_parse_failure(body: bytes, content_type: str, detail: str | None) -> None:
    """Bodies that are not exposition text fail with reason parse and a short detail."""
    with pytest.raises(ScrapeFailure, match=detail) as err:
        parse_body(body, content_type)
    assert err.value.reason == "parse"


def test_text_served_with_a_wrong_content_type_is_still_read() -> None:
    """Anything but OpenMetrics is read with the text parser, as Prometheus 2 does."""
    assert [f.name for f in parse_body(GOOD_TEXT, "application/json")] == [
        "http_requests",
        "process_cpu_seconds",
        "queue_depth",
    ]
