"""Local rate limiting, like Envoy's ``local_ratelimit`` filter: token buckets in this process.

One bucket for the whole listener (``rate``, ``burst``) and, optionally, one bucket per client
(``per_client_rate``, ``per_client_burst``) in a table bounded by ``max_clients`` (least recently
seen clients are forgotten first; a forgotten client starts again with a full bucket). Buckets
refill continuously at ``rate`` tokens per second up to ``burst``; a request takes one token from
every bucket that applies, or from none when one of them is empty. The limiter is pure: the caller
passes the clock, so tests need no sleeping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated

import msgspec

__all__ = ["RateLimitConfig", "RateLimiter", "TokenBucket", "retry_after_header"]

#: Fractions of a token below this count as a whole one, so that waiting exactly the reported
#: time always succeeds despite float rounding.
_EPSILON = 1e-9


class RateLimitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``rate_limit``: tokens per second and bucket sizes, overall and per client."""

    rate: float
    burst: Annotated[int, msgspec.Meta(ge=1)]
    per_client_rate: float | None = None
    per_client_burst: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_clients: Annotated[int, msgspec.Meta(ge=1)] = 10000

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            msg = f"rate: must be a number of tokens per second > 0, got {self.rate!r}"
            raise ValueError(msg)
        if self.burst < 1:
            msg = f"burst: must be at least 1, got {self.burst!r}"
            raise ValueError(msg)
        if self.per_client_rate is not None and not (
            self.per_client_rate > 0 and math.isfinite(self.per_client_rate)
        ):
            msg = (
                f"per_client_rate: must be a number of tokens per second > 0, "
                f"got {self.per_client_rate!r}"
            )
            raise ValueError(msg)
        if self.per_client_burst is not None:
            if self.per_client_rate is None:
                msg = "per_client_burst: needs per_client_rate"
                raise ValueError(msg)
            if self.per_client_burst < 1:
                msg = f"per_client_burst: must be at least 1, got {self.per_client_burst!r}"
                raise ValueError(msg)
        if self.max_clients < 1:
            msg = f"max_clients: must be at least 1, got {self.max_clients!r}"
            raise ValueError(msg)

    @property
    def client_burst(self) -> int | None:
        """The per-client bucket size: ``per_client_burst``, else one second of tokens (≥ 1)."""
        if self.per_client_rate is None:
            return None
        if self.per_client_burst is not None:
            return self.per_client_burst
        return max(1, math.ceil(self.per_client_rate))


class TokenBucket:
    """A bucket of ``burst`` tokens refilled continuously at ``rate`` tokens per second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last update (a clock going backwards adds none)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        missing = 1.0 - self.tokens
        if missing <= _EPSILON:
            return 0.0
        return missing / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket would be full at ``now`` (forgetting it loses nothing)."""
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.burst


class RateLimiter:
    """The global bucket and the per-client table of one listener."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self._global: TokenBucket | None = None
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._client_burst = config.client_burst
        self.rejected = 0
        self.rejected_per_client = 0
        self.evicted_clients = 0

    @property
    def clients(self) -> int:
        """Clients currently tracked in the per-client table."""
        return len(self._clients)

    def acquire(self, client: str, now: float) -> float | None:
        """Take a token for one request from ``client`` at ``now``.

        Returns None when the request may pass, else the seconds until it could (the caller
        answers 429 with ``Retry-After``, see :func:`retry_after_header`). A rejected request
        takes no token from any bucket.
        """
        config = self.config
        if self._global is None:
            self._global = TokenBucket(config.rate, config.burst, now)
        bucket = self._global
        bucket.refill(now)
        wait = bucket.wait()
        own: TokenBucket | None = None
        if config.per_client_rate is not None:
            own = self._client(client, now)
            own.refill(now)
            client_wait = own.wait()
            if client_wait > 0:
                self.rejected_per_client += 1
            wait = max(wait, client_wait)
        if wait > 0:
            self.rejected += 1
            return wait
        bucket.tokens -= 1.0
        if own is not None:
            own.tokens -= 1.0
        return None

    def _client(self, client: str, now: float) -> TokenBucket:
        table = self._clients
        bucket = table.get(client)
        if bucket is not None:
            table.move_to_end(client)
            return bucket
        if len(table) >= self.config.max_clients:
            self._evict(now)
        assert self.config.per_client_rate is not None
        assert self._client_burst is not None
        bucket = TokenBucket(self.config.per_client_rate, self._client_burst, now)
        table[client] = bucket
        return bucket

    def _evict(self, now: float) -> None:
        """Forget the least recently seen client, plus a few more whose buckets are full."""
        table = self._clients
        table.popitem(last=False)
        self.evicted_clients += 1
        for _ in range(min(8, len(table))):
            key, bucket = next(iter(table.items()))
            if not bucket.full(now):
                break
            del table[key]


def retry_after_header(wait: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait)))
