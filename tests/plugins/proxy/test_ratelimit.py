"""Local rate limiting: token buckets, global and per client, with an explicit clock."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.proxy._ratelimit import RateLimitConfig, RateLimiter, retry_after_header


def allowed(limiter: RateLimiter, client: str, now: float, count: int) -> int:
    return sum(limiter.acquire(client, now) is None for _ in range(count))


def test_burst_then_refill_at_rate() -> None:
    """A full bucket passes ``burst`` requests at once, then one per 1/rate seconds."""
    limiter = RateLimiter(RateLimitConfig(rate=2, burst=3))
    assert allowed(limiter, "a", 100.0, 5) == 3
    assert limiter.rejected == 2
    wait = limiter.acquire("a", 100.0)
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("a", 100.49) is not None
    assert limiter.acquire("a", 100.5) is None
    assert limiter.acquire("a", 100.5) == pytest.approx(0.5)
    assert allowed(limiter, "a", 1000.0, 10) == 3  # refill stops at burst


def test_wait_is_the_time_until_the_next_token() -> None:
    """The returned wait is exact for a partial token, and Retry-After rounds it up to ≥ 1 s."""
    limiter = RateLimiter(RateLimitConfig(rate=0.1, burst=1))
    assert limiter.acquire("a", 0.0) is None
    assert limiter.acquire("a", 2.5) == pytest.approx(7.5)
    assert retry_after_header(7.5) == "8"
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(3.0) == "3"


def test_clock_going_backwards_adds_no_tokens() -> None:
    """A monotonic clock should never go back, but if it does nothing is gained."""
    limiter = RateLimiter(RateLimitConfig(rate=1, burst=1))
    assert limiter.acquire("a", 10.0) is None
    assert limiter.acquire("a", 5.0) is not None
    assert limiter.acquire("a", 10.5) is not None
    assert limiter.acquire("a", 11.0) is None


def test_per_client_buckets_are_independent() -> None:
    """One noisy client exhausts its own bucket, not another client's."""
    limiter = RateLimiter(
        RateLimitConfig(rate=1000, burst=1000, per_client_rate=1, per_client_burst=2)
    )
    assert allowed(limiter, "10.0.0.1", 0.0, 5) == 2
    assert allowed(limiter, "10.0.0.2", 0.0, 5) == 2
    assert limiter.rejected == 6
    assert limiter.rejected_per_client == 6
    assert limiter.clients == 2
    assert limiter.acquire("10.0.0.1", 0.0) == pytest.approx(1.0)


def test_global_bucket_limits_all_clients_together() -> None:
    """The global bucket caps the sum over clients; a rejected request takes no client token."""
    limiter = RateLimiter(RateLimitConfig(rate=1, burst=3, per_client_rate=10, per_client_burst=10))
    assert [limiter.acquire(c, 0.0) is None for c in "abcd"] == [True, True, True, False]
    assert limiter.rejected_per_client == 0
    # d's own bucket was not charged by the rejected request: after the global refill, d has 10.
    assert limiter.acquire("d", 1.0) is None
    assert limiter.acquire("d", 1.0) == pytest.approx(1.0)


def test_rejection_reports_the_longer_of_both_waits() -> None:
    """When the client's bucket is emptier than the global one, its wait is reported."""
    limiter = RateLimiter(
        RateLimitConfig(rate=100, burst=100, per_client_rate=0.5, per_client_burst=1)
    )
    assert limiter.acquire("a", 0.0) is None
    assert limiter.acquire("a", 0.0) == pytest.approx(2.0)


def test_per_client_burst_defaults_to_one_second_of_tokens() -> None:
    """Without per_client_burst, a client's bucket holds ceil(per_client_rate) tokens (≥ 1)."""
    assert RateLimitConfig(rate=1, burst=1, per_client_rate=2.5).client_burst == 3
    assert RateLimitConfig(rate=1, burst=1, per_client_rate=0.1).client_burst == 1
    assert RateLimitConfig(rate=1, burst=1).client_burst is None
    limiter = RateLimiter(RateLimitConfig(rate=100, burst=100, per_client_rate=2.5))
    assert allowed(limiter, "a", 0.0, 10) == 3


def test_client_table_is_bounded_lru() -> None:
    """The per-client table never exceeds max_clients; the least recently seen is forgotten."""
    limiter = RateLimiter(
        RateLimitConfig(rate=1e6, burst=10**6, per_client_rate=1, per_client_burst=1, max_clients=3)
    )
    for client in ("a", "b", "c"):
        assert limiter.acquire(client, 0.0) is None
    assert limiter.acquire("a", 0.0) is not None  # a is now the most recent
    assert limiter.acquire("d", 0.0) is None  # evicts b
    assert limiter.clients == 3
    assert limiter.evicted_clients == 1
    assert limiter.acquire("a", 0.0) is not None  # a was kept: still empty
    assert limiter.acquire("c", 0.0) is not None  # c was kept: still empty
    assert limiter.acquire("b", 0.0) is None  # b starts over with a full bucket
    for index in range(1000):
        limiter.acquire(f"client-{index}", float(index))
    assert limiter.clients <= 3


def test_config_errors_name_the_field() -> None:
    """Bad values are one-line errors naming the field; decoding rejects unknown keys."""
    with pytest.raises(ValueError, match=r"^rate: must be a number of tokens per second > 0"):
        RateLimitConfig(rate=0, burst=1)
    with pytest.raises(ValueError, match=r"^rate: "):
        RateLimitConfig(rate=math.inf, burst=1)
    with pytest.raises(ValueError, match=r"^burst: must be at least 1"):
        RateLimitConfig(rate=1, burst=0)
    with pytest.raises(ValueError, match=r"^per_client_rate: "):
        RateLimitConfig(rate=1, burst=1, per_client_rate=-1)
    with pytest.raises(ValueError, match=r"^per_client_burst: needs per_client_rate"):
        RateLimitConfig(rate=1, burst=1, per_client_burst=5)
    with pytest.raises(ValueError, match=r"^max_clients: must be at least 1"):
        RateLimitConfig(rate=1, burst=1, max_clients=0)
    with pytest.raises(msgspec.ValidationError, match="unknown field `brust`"):
        msgspec.convert({"rate": 1, "burst": 1, "brust": 2}, RateLimitConfig)
    with pytest.raises(msgspec.ValidationError, match=r"burst"):
        msgspec.convert({"rate": 1, "burst": 0}, RateLimitConfig)
    config = msgspec.convert({"rate": 5, "burst": 10, "per_client_rate": 1}, RateLimitConfig)
    assert (config.rate, config.burst, config.client_burst) == (5, 10, 1)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=100),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    """Over any window [t0, t1], allowed requests ≤ burst + rate * (t1 - t0)."""
    limiter = RateLimiter(RateLimitConfig(rate=rate, burst=burst))
    now = 0.0
    times: list[float] = []
    for step in steps:
        now += step
        if limiter.acquire("c", now) is None:
            times.append(now)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    duration=st.floats(min_value=0, max_value=20),
)
def test_a_patient_client_gets_the_full_rate(rate: float, burst: int, duration: float) -> None:
    """Retrying exactly after the reported wait, a client gets burst + rate * t requests
    (within one), so the limiter is not stricter than configured either."""
    limiter = RateLimiter(RateLimitConfig(rate=rate, burst=burst))
    now, passed = 0.0, 0
    for _ in range(100_000):
        if now > duration:
            break
        wait = limiter.acquire("c", now)
        if wait is None:
            passed += 1
        else:
            now += wait
    assert now > duration
    assert passed >= math.floor(burst + rate * duration) - 1
    assert passed <= burst + rate * duration + 1e-6
