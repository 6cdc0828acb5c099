"""Retries, like Envoy's ``retry_policy`` plus its cluster retry budget.

What is retried (Envoy's ``retry_on`` conditions):

======================== ======================================================================
``connect-failure``      the connection to the upstream could not be made
``reset``                connect failure, reset or disconnect, per-try timeout: no response
``gateway-error``        a 502, 503 or 504, or no response at all (as ``reset``)
``5xx``                  any 5xx, or no response at all (as ``reset``)
``retriable-status-codes`` a status listed in ``statuses``
======================== ======================================================================

Only requests whose method is in ``methods`` (idempotent ones by default) and whose body can be
sent again are retried. Between tries the caller sleeps :meth:`RetryPolicy.backoff`: Envoy's
fully jittered exponential backoff, ``uniform(0, min((2**n - 1) * base, max))`` before retry n.
:class:`RetryBudget` bounds the retries in flight to a share of the requests in flight.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Final, Literal

import msgspec

from sidecar_runtime import Duration

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_ON",
    "RetryBudget",
    "RetryConfig",
    "RetryError",
    "RetryOn",
    "RetryPolicy",
]

RetryOn = Literal["connect-failure", "reset", "gateway-error", "5xx", "retriable-status-codes"]
RetryError = Literal["connect-failure", "reset", "timeout"]
RETRY_ON: Final = ("connect-failure", "reset", "gateway-error", "5xx", "retriable-status-codes")
IDEMPOTENT_METHODS: Final = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")
_GATEWAY_STATUSES = frozenset((502, 503, 504))
#: The ``retry_on`` conditions under which each kind of failure without a response is retried.
_ERROR_CONDITIONS: Final[dict[str, frozenset[str]]] = {
    "connect-failure": frozenset(("connect-failure", "reset", "gateway-error", "5xx")),
    "reset": frozenset(("reset", "gateway-error", "5xx")),
    "timeout": frozenset(("reset", "gateway-error", "5xx")),
}


class RetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``retry``: how often, on what, how long to wait, and the cluster's retry budget."""

    attempts: Annotated[int, msgspec.Meta(ge=1)] = 2
    retry_on: list[RetryOn] = msgspec.field(default_factory=lambda: ["connect-failure", "reset"])
    statuses: list[int] = msgspec.field(default_factory=list)
    per_try_timeout: Duration | None = None
    backoff_base: Duration = Duration(0.025)
    backoff_max: Duration = Duration(0.25)
    budget_percent: float = 20.0
    min_retry_concurrency: Annotated[int, msgspec.Meta(ge=0)] = 3
    methods: list[str] = msgspec.field(default_factory=lambda: list(IDEMPOTENT_METHODS))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            msg = f"attempts: must be at least 1 (1 = no retries), got {self.attempts!r}"
            raise ValueError(msg)
        for condition in self.retry_on:
            if condition not in RETRY_ON:
                msg = f"retry_on: unknown condition {condition!r}, expected one of {RETRY_ON}"
                raise ValueError(msg)
        for status in self.statuses:
            if not 100 <= status <= 599:
                msg = f"statuses: expected HTTP status codes within 100-599, got {status!r}"
                raise ValueError(msg)
        listed = "retriable-status-codes" in self.retry_on
        if listed and not self.statuses:
            msg = "statuses: retry_on has 'retriable-status-codes' but no statuses are listed"
            raise ValueError(msg)
        if self.statuses and not listed:
            msg = "statuses: listed, but retry_on lacks 'retriable-status-codes'"
            raise ValueError(msg)
        if self.per_try_timeout is not None and not self.per_try_timeout > 0:
            msg = f"per_try_timeout: must be more than 0, got {self.per_try_timeout!r}"
            raise ValueError(msg)
        if not (self.backoff_base > 0 and math.isfinite(self.backoff_base)):
            msg = f"backoff_base: must be more than 0, got {self.backoff_base!r}"
            raise ValueError(msg)
        if not (self.backoff_max >= self.backoff_base and math.isfinite(self.backoff_max)):
            msg = (
                f"backoff_max: must be at least backoff_base ({self.backoff_base:g}s), "
                f"got {self.backoff_max!r}"
            )
            raise ValueError(msg)
        if not 0 <= self.budget_percent <= 100:
            msg = f"budget_percent: must be within 0..100, got {self.budget_percent!r}"
            raise ValueError(msg)
        if self.min_retry_concurrency < 0:
            msg = f"min_retry_concurrency: must be 0 or more, got {self.min_retry_concurrency!r}"
            raise ValueError(msg)
        for method in self.methods:
            if not method or not method.isascii() or not method.isalpha() or not method.isupper():
                msg = f"methods: expected HTTP methods in capitals like 'GET', got {method!r}"
                raise ValueError(msg)


class RetryPolicy:
    """Decides whether a failed try is tried again, and how long to wait first."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._conditions = frozenset(config.retry_on)
        self._statuses = frozenset(config.statuses)
        self._methods = frozenset(config.methods)

    def retryable_method(self, method: str, has_body_replayable: bool) -> bool:
        """True when a request may be retried at all: an allowed method and a body (or none)
        that can be sent again."""
        return self.config.attempts > 1 and has_body_replayable and method in self._methods

    def retryable_status(self, status: int) -> bool:
        """True when a response with ``status`` matches a ``retry_on`` condition."""
        conditions = self._conditions
        if status >= 500 and "5xx" in conditions:
            return True
        if status in _GATEWAY_STATUSES and "gateway-error" in conditions:
            return True
        return status in self._statuses

    def retryable_error(self, error: RetryError) -> bool:
        """True when a failure without a response matches a ``retry_on`` condition."""
        return not self._conditions.isdisjoint(_ERROR_CONDITIONS[error])

    def should_retry(
        self, attempt: int, *, status: int | None = None, error: RetryError | None = None
    ) -> bool:
        """True when another try should follow ``attempt`` tries that ended in ``status`` or
        ``error`` (give one of them)."""
        if attempt >= self.config.attempts:
            return False
        if error is not None:
            return self.retryable_error(error)
        if status is not None:
            return self.retryable_status(status)
        return False

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the retry that follows ``attempt`` tries (full jitter, capped)."""
        config = self.config
        exponent = min(max(attempt, 1), 62)
        ceiling = min((2**exponent - 1) * config.backoff_base, config.backoff_max)
        return self._rng.uniform(0.0, ceiling)


class RetryBudget:
    """Envoy's retry budget: retries in flight ≤ ``budget_percent`` of requests in flight, but
    ``min_retry_concurrency`` retries are always allowed."""

    def __init__(self, budget_percent: float, min_retry_concurrency: int) -> None:
        if not 0 <= budget_percent <= 100:
            msg = f"budget_percent: must be within 0..100, got {budget_percent!r}"
            raise ValueError(msg)
        if min_retry_concurrency < 0:
            msg = f"min_retry_concurrency: must be 0 or more, got {min_retry_concurrency!r}"
            raise ValueError(msg)
        self.budget_percent = budget_percent
        self.min_retry_concurrency = min_retry_concurrency
        self.active = 0
        self.exhausted = 0

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryBudget:
        """The budget a :class:`RetryConfig` describes."""
        return cls(config.budget_percent, config.min_retry_concurrency)

    def limit(self, active_requests: int) -> int:
        """The retries allowed in flight while ``active_requests`` requests are."""
        share = int(self.budget_percent * max(0, active_requests) / 100)
        return max(self.min_retry_concurrency, share)

    def try_acquire(self, active_requests: int) -> bool:
        """Start one retry, or count the budget as exhausted and return False."""
        if self.active >= self.limit(active_requests):
            self.exhausted += 1
            return False
        self.active += 1
        return True

    def release(self) -> None:
        """A retry started by :meth:`try_acquire` has finished."""
        if self.active <= 0:
            msg = "retry budget: release() without a matching try_acquire()"
            raise RuntimeError(msg)
        self.active -= 1
