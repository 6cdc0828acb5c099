"""Circuit breaking: Envoy's concurrency thresholds per cluster."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.proxy._breaker import RESOURCES, CircuitBreaker, CircuitBreakerConfig


def pairs(breaker: CircuitBreaker) -> dict[str, tuple[Callable[[], bool], Callable[[], None]]]:
    return {
        "connections": (breaker.try_connection, breaker.release_connection),
        "pending_requests": (breaker.try_pending, breaker.release_pending),
        "requests": (breaker.try_request, breaker.release_request),
        "retries": (breaker.try_retry, breaker.release_retry),
    }


@pytest.mark.parametrize("resource", RESOURCES)
def test_each_threshold_admits_up_to_its_limit(resource: str) -> None:
    """try_* succeeds up to the threshold, then overflows and opens; a release closes it."""
    config = CircuitBreakerConfig(
        max_connections=2, max_pending_requests=2, max_requests=2, max_retries=2
    )
    breaker = CircuitBreaker(config)
    take, release = pairs(breaker)[resource]
    assert take()
    assert breaker.open[resource] is False
    assert take()
    assert breaker.open[resource] is True
    assert breaker.remaining(resource) == 0
    assert not take()
    assert not take()
    assert breaker.overflows[resource] == 2
    assert breaker.active[resource] == 2
    release()
    assert breaker.open[resource] is False
    assert breaker.remaining(resource) == 1
    assert take()
    others = [name for name in RESOURCES if name != resource]
    assert all(breaker.active[name] == 0 and breaker.overflows[name] == 0 for name in others)


def test_zero_pending_and_retries_mean_none_allowed() -> None:
    """max_pending_requests = 0 refuses all queueing; max_retries = 0 all retries (open at once)."""
    breaker = CircuitBreaker(CircuitBreakerConfig(max_pending_requests=0, max_retries=0))
    assert breaker.open["pending_requests"] is True
    assert breaker.open["retries"] is True
    assert not breaker.try_pending()
    assert not breaker.try_retry()
    assert breaker.overflows == {
        "connections": 0,
        "pending_requests": 1,
        "requests": 0,
        "retries": 1,
    }
    assert breaker.try_request()


def test_defaults_are_envoys() -> None:
    """1024 connections, pending and requests, and 3 retries in flight."""
    breaker = CircuitBreaker()
    assert [breaker.remaining(r) for r in RESOURCES] == [1024, 1024, 1024, 3]
    for _ in range(3):
        assert breaker.try_retry()
    assert not breaker.try_retry()


def test_release_without_try_is_a_bug_that_is_reported() -> None:
    """Releasing more than was taken raises instead of corrupting the counts."""
    breaker = CircuitBreaker()
    with pytest.raises(RuntimeError, match=r"release_requests\(\) without a matching"):
        breaker.release_request()
    assert breaker.active["requests"] == 0


def test_config_errors_name_the_field() -> None:
    """Thresholds below their minimum are errors naming the field; unknown keys too."""
    with pytest.raises(ValueError, match=r"^max_connections: must be at least 1, got 0"):
        CircuitBreakerConfig(max_connections=0)
    with pytest.raises(ValueError, match=r"^max_requests: must be at least 1"):
        CircuitBreakerConfig(max_requests=0)
    with pytest.raises(ValueError, match=r"^max_retries: must be at least 0"):
        CircuitBreakerConfig(max_retries=-1)
    with pytest.raises(msgspec.ValidationError, match="unknown field `max_request`"):
        msgspec.convert({"max_request": 5}, CircuitBreakerConfig)
    assert msgspec.convert({"max_requests": 5}, CircuitBreakerConfig).max_requests == 5


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(min_value=0, max_value=5),
    ops=st.lists(st.booleans(), max_size=100),
)
def test_active_never_exceeds_the_threshold(limit: int, ops: list[bool]) -> None:
    """Under any sequence of takes and releases, in-flight retries stay within the limit and
    the open flag tells whether the limit is reached."""
    breaker = CircuitBreaker(CircuitBreakerConfig(max_retries=limit))
    held = 0
    for take in ops:
        if take:
            held += breaker.try_retry()
        elif held:
            breaker.release_retry()
            held -= 1
        assert breaker.active["retries"] == held <= limit
        assert breaker.open["retries"] == (held >= limit)
