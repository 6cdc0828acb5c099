"""Outlier detection (consecutive errors, ejection times, max percent) and round robin."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.proxy._outlier import OutlierConfig, OutlierDetector, RoundRobin

from sidecar_runtime import Duration
from sidecar_runtime._types import dec_hook

HOSTS = [f"10.0.0.{i}:8080" for i in range(1, 11)]


def config(**kwargs: object) -> OutlierConfig:
    return msgspec.convert(kwargs, OutlierConfig, dec_hook=dec_hook)


def fail(detector: OutlierDetector, host: str, times: int, now: float, status: int = 500) -> None:
    for _ in range(times):
        detector.report(host, status=status, error=False, now=now)


def test_consecutive_5xx_ejects_and_success_resets() -> None:
    """Five 5xx in a row eject; a success in between restarts the count."""
    detector = OutlierDetector(OutlierConfig(), HOSTS)
    host = HOSTS[0]
    fail(detector, host, 4, 0.0)
    detector.report(host, status=200, error=False, now=0.0)
    fail(detector, host, 4, 0.0)
    assert detector.ejected(0.0) == []
    fail(detector, host, 1, 0.0)
    assert detector.ejected(0.0) == [host]
    assert host not in detector.available(0.0)
    assert len(detector.available(0.0)) == 9
    assert (detector.ejections_total, detector.ejections_5xx) == (1, 1)


def test_4xx_is_a_success_for_outlier_detection() -> None:
    """Client errors say nothing about the endpoint's health and reset the counts."""
    detector = OutlierDetector(OutlierConfig(consecutive_5xx=2), HOSTS)
    fail(detector, HOSTS[0], 1, 0.0)
    detector.report(HOSTS[0], status=404, error=False, now=0.0)
    fail(detector, HOSTS[0], 1, 0.0)
    assert detector.ejected(0.0) == []


def test_gateway_errors_and_local_errors_count_together() -> None:
    """502/503/504 and connect errors count towards consecutive_gateway_errors; a 500 resets
    that count but still counts as a 5xx."""
    detector = OutlierDetector(config(consecutive_5xx=0, consecutive_gateway_errors=3), HOSTS)
    host = HOSTS[1]
    detector.report(host, status=502, error=False, now=0.0)
    detector.report(host, status=None, error=True, now=0.0)
    detector.report(host, status=500, error=False, now=0.0)
    detector.report(host, status=503, error=False, now=0.0)
    detector.report(host, status=None, error=True, now=0.0)
    assert detector.ejected(0.0) == []
    detector.report(host, status=504, error=False, now=0.0)
    assert detector.ejected(0.0) == [host]
    assert detector.ejections_gateway == 1


def test_local_errors_count_as_5xx() -> None:
    """Connect failures, resets and timeouts alone reach consecutive_5xx."""
    detector = OutlierDetector(config(consecutive_5xx=3, consecutive_gateway_errors=0), HOSTS)
    for _ in range(3):
        detector.report(HOSTS[2], status=None, error=True, now=0.0)
    assert detector.ejected(0.0) == [HOSTS[2]]


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    """base * n, capped at max_ejection_time; the endpoint returns when the time has passed."""
    cfg = config(
        consecutive_5xx=1, base_ejection_time="30s", max_ejection_time="75s", interval="1h"
    )
    detector = OutlierDetector(cfg, HOSTS)
    host = HOSTS[0]
    now = 0.0
    for expected in (30.0, 60.0, 75.0, 75.0):
        fail(detector, host, 1, now)
        assert detector.ejected_until(host) == pytest.approx(now + expected)
        assert detector.is_ejected(host, now + expected - 0.001)
        now += expected
        assert not detector.is_ejected(host, now)
        assert host in detector.available(now)
    assert detector.ejections_total == 4


def test_multiplier_decays_while_healthy() -> None:
    """Each full interval back in service lowers the multiplier, so the next ejection is short."""
    cfg = config(consecutive_5xx=1, base_ejection_time="10s", max_ejection_time="1h", interval="5s")
    detector = OutlierDetector(cfg, HOSTS)
    host = HOSTS[0]
    fail(detector, host, 1, 0.0)  # multiplier 1: until 10
    fail(detector, host, 1, 10.0)  # back at 10, immediately fails again: multiplier 2, until 30
    assert detector.ejected_until(host) == pytest.approx(30.0)
    fail(detector, host, 1, 34.0)  # 4 s healthy: no decay yet, multiplier 3 → until 64
    assert detector.ejected_until(host) == pytest.approx(64.0)
    fail(detector, host, 1, 64.0 + 10.0)  # two intervals healthy: 3 → 1, then ejected: 2 → 20 s
    assert detector.ejected_until(host) == pytest.approx(74.0 + 20.0)
    fail(detector, host, 1, 94.0 + 1000.0)  # long healthy: back to 0, ejected for base
    assert detector.ejected_until(host) == pytest.approx(1094.0 + 10.0)


def test_reports_while_ejected_are_ignored() -> None:
    """Results from an ejected endpoint (panic traffic) neither extend nor end its ejection."""
    detector = OutlierDetector(config(consecutive_5xx=1, base_ejection_time="10s"), HOSTS)
    fail(detector, HOSTS[0], 1, 0.0)
    fail(detector, HOSTS[0], 5, 1.0)
    detector.report(HOSTS[0], status=200, error=False, now=2.0)
    assert detector.ejected_until(HOSTS[0]) == pytest.approx(10.0)
    assert detector.ejections_total == 1
    detector.report("unknown:1", status=500, error=False, now=0.0)  # ignored, no error
    assert not detector.is_ejected("unknown:1", 0.0)


def test_max_ejection_percent_follows_envoy() -> None:
    """Ejections are allowed while 100 * (ejected + 1) / hosts ≤ max_ejection_percent."""
    detector = OutlierDetector(config(consecutive_5xx=1, max_ejection_percent=20), HOSTS)
    for host in HOSTS[:4]:
        fail(detector, host, 1, 0.0)
    assert detector.ejected(0.0) == HOSTS[:2]
    assert detector.ejections_overflow == 2
    small = OutlierDetector(config(consecutive_5xx=1), HOSTS[:3])  # 10 % of 3 hosts: none
    fail(small, HOSTS[0], 3, 0.0)
    assert small.ejected(0.0) == []
    assert small.ejections_overflow == 3


def test_always_eject_one_host() -> None:
    """With always_eject_one_host, one endpoint may be ejected whatever the percentage."""
    detector = OutlierDetector(config(consecutive_5xx=1, always_eject_one_host=True), HOSTS[:3])
    fail(detector, HOSTS[0], 1, 0.0)
    fail(detector, HOSTS[1], 1, 0.0)
    assert detector.ejected(0.0) == [HOSTS[0]]
    assert detector.ejections_overflow == 1
    fail(detector, HOSTS[1], 1, 30.0)  # HOSTS[0] is back at 30 s: one may be ejected again
    assert detector.ejected(30.0) == [HOSTS[1]]


def test_config_errors_name_the_field() -> None:
    """Bad values are one-line errors naming the field."""
    with pytest.raises(
        ValueError, match=r"^max_ejection_time: must be at least base_ejection_time"
    ):
        OutlierConfig(base_ejection_time=Duration(60), max_ejection_time=Duration(30))
    with pytest.raises(ValueError, match=r"^interval: must be more than 0"):
        OutlierConfig(interval=Duration(0))
    with pytest.raises(ValueError, match=r"^max_ejection_percent: must be within 0\.\.100"):
        OutlierConfig(max_ejection_percent=101)
    with pytest.raises(ValueError, match=r"^consecutive_5xx: must be 0 \(off\) or more"):
        OutlierConfig(consecutive_5xx=-1)
    with pytest.raises(msgspec.ValidationError, match="unknown field `consecutive_500`"):
        config(consecutive_500=3)
    assert config(base_ejection_time="250ms", max_ejection_time="1s").base_ejection_time == 0.25
    with pytest.raises(ValueError, match="at least one endpoint"):
        OutlierDetector(OutlierConfig(), [])


def test_round_robin_skips_ejected_endpoints() -> None:
    """Ejected endpoints get no picks; when they return they are picked again in turn."""
    hosts = HOSTS[:3]
    detector = OutlierDetector(config(consecutive_5xx=1, max_ejection_percent=50), hosts)
    rr = RoundRobin(hosts, detector)
    assert [rr.pick(0.0) for _ in range(6)] == hosts * 2
    fail(detector, hosts[1], 1, 0.0)
    assert [rr.pick(1.0) for _ in range(4)] == [hosts[0], hosts[2], hosts[0], hosts[2]]
    assert set(rr.pick(30.0) for _ in range(3)) == set(hosts)


def test_round_robin_panics_when_all_are_ejected() -> None:
    """With every endpoint ejected, traffic spreads over all of them (Envoy's panic mode)."""
    hosts = HOSTS[:2]
    detector = OutlierDetector(config(consecutive_5xx=1, max_ejection_percent=100), hosts)
    fail(detector, hosts[0], 1, 0.0)
    fail(detector, hosts[1], 1, 0.0)
    rr = RoundRobin(hosts, detector)
    assert Counter(rr.pick(1.0) for _ in range(10)) == {hosts[0]: 5, hosts[1]: 5}
    assert rr.panics == 10
    assert RoundRobin(hosts, None).pick(0.0) == hosts[0]
    with pytest.raises(ValueError, match="at least one endpoint"):
        RoundRobin([], None)


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=8),
    ejected=st.sets(st.integers(min_value=0, max_value=7)),
    picks=st.integers(min_value=1, max_value=200),
)
def test_round_robin_is_fair(count: int, ejected: set[int], picks: int) -> None:
    """Over any number of picks, endpoints in service differ by at most one pick and ejected
    ones get none (unless all are ejected: then all share equally)."""
    hosts = HOSTS[:count]
    detector = OutlierDetector(config(consecutive_5xx=1, max_ejection_percent=100), hosts)
    for index in ejected:
        if index < count:
            fail(detector, hosts[index], 1, 0.0)
    out = set(detector.ejected(1.0))
    serving = [h for h in hosts if h not in out] or hosts
    rr = RoundRobin(hosts, detector)
    counts = Counter(rr.pick(1.0) for _ in range(picks))
    assert set(counts) <= set(serving)
    tally = [counts[h] for h in serving]
    assert max(tally) - min(tally) <= 1
    assert sum(tally) == picks


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=10),
    percent=st.integers(min_value=0, max_value=100),
    one=st.booleans(),
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=9),
            st.sampled_from([200, 404, 500, 502, 503, None]),
            st.floats(min_value=0, max_value=20),
        ),
        max_size=80,
    ),
)
def test_ejected_share_never_exceeds_max_ejection_percent(
    count: int, percent: int, one: bool, events: list[tuple[int, int | None, float]]
) -> None:
    """Whatever happens, ejected endpoints stay within max_ejection_percent (or one, with
    always_eject_one_host), and the ejected and available lists partition the endpoints."""
    hosts = HOSTS[:count]
    cfg = config(
        consecutive_5xx=2,
        consecutive_gateway_errors=1,
        base_ejection_time="10s",
        max_ejection_percent=percent,
        always_eject_one_host=one,
        interval="5s",
    )
    detector = OutlierDetector(cfg, hosts)
    limit = max(percent * count // 100, 1 if one else 0)
    now = 0.0
    for index, status, step in events:
        now += step
        host = hosts[index % count]
        detector.report(host, status=status, error=status is None, now=now)
        ejected, available = detector.ejected(now), detector.available(now)
        assert len(ejected) <= limit
        assert sorted(ejected + available) == sorted(hosts)
        assert all((detector.ejected_until(h) or 0.0) > now for h in ejected)
