"""Circuit breaking per upstream cluster, with Envoy's four thresholds.

Envoy's circuit breakers are concurrency limits, not error-rate trip switches: a cluster may have
at most ``max_connections`` open connections, ``max_pending_requests`` requests waiting for a
connection, ``max_requests`` requests in flight and ``max_retries`` retries in flight. A ``try_*``
call that would exceed its threshold fails (the caller answers 503 and the overflow is counted);
every successful ``try_*`` is paired with exactly one ``release_*``. While a resource is at its
threshold it is *open* (Envoy's ``circuit_breakers.<priority>.<resource>_open`` gauge).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = ["RESOURCES", "CircuitBreaker", "CircuitBreakerConfig"]

#: The resources a breaker limits, in the order of Envoy's ``circuit_breakers`` stats.
RESOURCES: Final = ("connections", "pending_requests", "requests", "retries")


class CircuitBreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``circuit_breaker``: Envoy's thresholds (its defaults, except 1024 for requests too)."""

    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_pending_requests: Annotated[int, msgspec.Meta(ge=0)] = 1024
    max_requests: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 3

    def __post_init__(self) -> None:
        for name, low in (
            ("max_connections", 1),
            ("max_pending_requests", 0),
            ("max_requests", 1),
            ("max_retries", 0),
        ):
            value = getattr(self, name)
            if value < low:
                msg = f"{name}: must be at least {low}, got {value!r}"
                raise ValueError(msg)

    def limit(self, resource: str) -> int:
        """The threshold of ``resource`` (one of :data:`RESOURCES`)."""
        value: int = getattr(self, f"max_{resource}")
        return value


class CircuitBreaker:
    """Counts what a cluster uses of each resource and refuses what would exceed a threshold."""

    def __init__(self, config: CircuitBreakerConfig | None = None) -> None:
        self.config = config or CircuitBreakerConfig()
        self._limits = {name: self.config.limit(name) for name in RESOURCES}
        #: In use now, per resource.
        self.active: dict[str, int] = dict.fromkeys(RESOURCES, 0)
        #: True while a resource is at its threshold (for a gauge).
        self.open: dict[str, bool] = {name: self._limits[name] == 0 for name in RESOURCES}
        #: ``try_*`` calls refused, per resource (Envoy's ``upstream_rq_pending_overflow`` etc.).
        self.overflows: dict[str, int] = dict.fromkeys(RESOURCES, 0)

    def remaining(self, resource: str) -> int:
        """How many more of ``resource`` may be taken now (Envoy's ``remaining_*`` gauges)."""
        return max(0, self._limits[resource] - self.active[resource])

    def _try(self, resource: str) -> bool:
        active = self.active[resource]
        limit = self._limits[resource]
        if active >= limit:
            self.overflows[resource] += 1
            self.open[resource] = True
            return False
        active += 1
        self.active[resource] = active
        self.open[resource] = active >= limit
        return True

    def _release(self, resource: str) -> None:
        active = self.active[resource]
        if active <= 0:
            msg = f"circuit breaker: release_{resource}() without a matching try_{resource}()"
            raise RuntimeError(msg)
        active -= 1
        self.active[resource] = active
        self.open[resource] = active >= self._limits[resource]

    def try_request(self) -> bool:
        """Admit one more request in flight, or count an overflow and return False."""
        return self._try("requests")

    def release_request(self) -> None:
        """A request admitted by :meth:`try_request` has finished."""
        self._release("requests")

    def try_pending(self) -> bool:
        """Let one more request wait for a connection, or count an overflow and return False."""
        return self._try("pending_requests")

    def release_pending(self) -> None:
        """A waiting request got a connection or gave up."""
        self._release("pending_requests")

    def try_retry(self) -> bool:
        """Admit one more retry in flight, or count an overflow and return False."""
        return self._try("retries")

    def release_retry(self) -> None:
        """A retry admitted by :meth:`try_retry` has finished."""
        self._release("retries")

    def try_connection(self) -> bool:
        """Allow one more upstream connection, or count an overflow and return False."""
        return self._try("connections")

    def release_connection(self) -> None:
        """An upstream connection allowed by :meth:`try_connection` was closed."""
        self._release("connections")
