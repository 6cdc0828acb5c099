"""Retry policy (conditions, methods, backoff) and the retry budget."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.proxy._retry import RetryBudget, RetryConfig, RetryPolicy

from sidecar_runtime import Duration
from sidecar_runtime._types import dec_hook


def policy(**kwargs: object) -> RetryPolicy:
    config = msgspec.convert(kwargs, RetryConfig, dec_hook=dec_hook)
    return RetryPolicy(config, random.Random(7))  # noqa: S311 - reproducible jitter


def test_defaults_retry_connect_failures_and_resets_once() -> None:
    """Two tries in all; connect failures, resets and timeouts are retried, statuses are not."""
    retry = policy()
    assert retry.should_retry(1, error="connect-failure")
    assert retry.should_retry(1, error="reset")
    assert retry.should_retry(1, error="timeout")
    assert not retry.should_retry(2, error="connect-failure")
    assert not retry.should_retry(1, status=503)
    assert not retry.should_retry(1)


@pytest.mark.parametrize(
    ("retry_on", "status", "expected"),
    [
        (["5xx"], 500, True),
        (["5xx"], 503, True),
        (["5xx"], 429, False),
        (["gateway-error"], 500, False),
        (["gateway-error"], 502, True),
        (["gateway-error"], 504, True),
        (["connect-failure"], 503, False),
        (["reset"], 502, False),
    ],
)
def test_status_conditions(retry_on: list[str], status: int, expected: bool) -> None:
    """5xx retries every 5xx; gateway-error only 502/503/504; the others no status."""
    assert policy(retry_on=retry_on, attempts=3).should_retry(1, status=status) is expected


@pytest.mark.parametrize(
    ("retry_on", "error", "expected"),
    [
        (["connect-failure"], "connect-failure", True),
        (["connect-failure"], "reset", False),
        (["connect-failure"], "timeout", False),
        (["reset"], "connect-failure", True),
        (["reset"], "timeout", True),
        (["5xx"], "reset", True),
        (["gateway-error"], "timeout", True),
        (["retriable-status-codes"], "reset", False),
    ],
)
def test_error_conditions(retry_on: list[str], error: str, expected: bool) -> None:
    """Failures without a response follow Envoy: reset, 5xx and gateway-error cover all of them,
    connect-failure only connect failures."""
    kwargs: dict[str, object] = {"retry_on": retry_on}
    if "retriable-status-codes" in retry_on:
        kwargs["statuses"] = [409]
    assert policy(**kwargs).should_retry(1, error=error) is expected  # type: ignore[arg-type]


def test_retriable_status_codes() -> None:
    """Listed statuses are retried, others are not."""
    retry = policy(retry_on=["retriable-status-codes"], statuses=[409, 429], attempts=4)
    assert retry.should_retry(1, status=429)
    assert retry.should_retry(3, status=409)
    assert not retry.should_retry(4, status=409)
    assert not retry.should_retry(1, status=503)


def test_methods_and_replayable_bodies() -> None:
    """Idempotent methods with a replayable body are retryable; POST or a streamed body not."""
    retry = policy()
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"):
        assert retry.retryable_method(method, True)
    assert not retry.retryable_method("POST", True)
    assert not retry.retryable_method("PATCH", True)
    assert not retry.retryable_method("PUT", False)
    assert policy(methods=["POST"]).retryable_method("POST", True)
    assert not policy(attempts=1).retryable_method("GET", True)


def test_backoff_is_full_jitter_capped() -> None:
    """Retry n waits uniform(0, min((2**n - 1) * base, max)): the upper bound is reached and
    never exceeded."""
    retry = policy(backoff_base="10ms", backoff_max="50ms")
    for attempt, ceiling in ((1, 0.01), (2, 0.03), (3, 0.05), (10, 0.05), (10_000, 0.05)):
        samples = [retry.backoff(attempt) for _ in range(2000)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.95
        assert min(samples) < ceiling * 0.05


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    """The jitter comes from the rng given, so tests and benches can fix it."""
    a, b = policy(), policy()
    assert [a.backoff(2) for _ in range(5)] == [b.backoff(2) for _ in range(5)]


def test_config_errors_name_the_field() -> None:
    """Bad values are one-line errors naming the field."""
    cases: list[tuple[dict[str, object], str]] = [
        ({"attempts": 0}, r"^attempts: must be at least 1"),
        ({"retry_on": ["retriable-status-codes"]}, r"^statuses: retry_on has"),
        ({"statuses": [503]}, r"^statuses: listed, but retry_on lacks"),
        (
            {"retry_on": ["retriable-status-codes"], "statuses": [99]},
            r"^statuses: expected HTTP status codes within 100-599",
        ),
        ({"per_try_timeout": Duration(0)}, r"^per_try_timeout: must be more than 0"),
        ({"backoff_base": Duration(0)}, r"^backoff_base: must be more than 0"),
        (
            {"backoff_base": Duration(1), "backoff_max": Duration(0.5)},
            r"^backoff_max: must be at least backoff_base",
        ),
        ({"budget_percent": 120.0}, r"^budget_percent: must be within 0\.\.100"),
        ({"methods": ["get"]}, r"^methods: expected HTTP methods in capitals"),
        ({"retry_on": ["gateway_error"]}, r"^retry_on: unknown condition 'gateway_error'"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            RetryConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="retry_on"):
        msgspec.convert({"retry_on": ["sometimes"]}, RetryConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field `attempt`"):
        msgspec.convert({"attempt": 3}, RetryConfig)
    decoded = msgspec.convert({"per_try_timeout": "1.5s"}, RetryConfig, dec_hook=dec_hook)
    assert decoded.per_try_timeout == 1.5


def test_budget_allows_min_concurrency_then_a_share() -> None:
    """min_retry_concurrency retries are always allowed; beyond that budget_percent of the
    requests in flight; a refusal is counted as exhausted."""
    budget = RetryBudget(20.0, 3)
    assert [budget.try_acquire(1) for _ in range(4)] == [True, True, True, False]
    assert budget.exhausted == 1
    assert budget.try_acquire(20)  # 20 % of 20 = 4
    assert not budget.try_acquire(20)
    assert budget.try_acquire(100)  # 20 % of 100 = 20
    assert budget.active == 5
    for _ in range(5):
        budget.release()
    with pytest.raises(RuntimeError, match="without a matching try_acquire"):
        budget.release()
    assert budget.limit(0) == 3
    assert budget.limit(99) == 19


def test_budget_from_config_and_zero_budget() -> None:
    """A zero budget with no minimum allows no retries at all."""
    budget = RetryBudget.from_config(RetryConfig(budget_percent=0.0, min_retry_concurrency=0))
    assert not budget.try_acquire(1000)
    assert budget.exhausted == 1
    with pytest.raises(ValueError, match="budget_percent"):
        RetryBudget(-1, 3)


@settings(max_examples=100, deadline=None)
@given(
    percent=st.floats(min_value=0, max_value=100),
    minimum=st.integers(min_value=0, max_value=5),
    actives=st.lists(st.integers(min_value=0, max_value=200), max_size=60),
)
def test_budget_bound_holds(percent: float, minimum: int, actives: list[int]) -> None:
    """A retry is admitted only while retries in flight < max(min, percent * requests)."""
    budget = RetryBudget(percent, minimum)
    for active in actives:
        before = budget.active
        admitted = budget.try_acquire(active)
        assert admitted == (before < max(minimum, int(percent * active / 100)))
        if active % 3 == 0 and budget.active:
            budget.release()
