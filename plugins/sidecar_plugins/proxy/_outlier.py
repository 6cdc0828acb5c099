"""Passive outlier detection over a cluster's endpoints, with Envoy's consecutive-error detectors.

Semantics (Envoy's ``outlier_detection`` with ``split_external_local_origin_errors: false``):

- A local-origin error (connect failure, reset, timeout) counts as a 5xx and as a gateway error.
- A 5xx counts towards ``consecutive_5xx``; a 502, 503 or 504 also towards
  ``consecutive_gateway_errors``; any other 5xx resets the gateway count; a response below 500
  resets both. 0 disables a detector.
- When a count reaches its threshold the endpoint is ejected for
  ``base_ejection_time * times ejected``, capped at ``max_ejection_time``; the counts restart.
- Ejection is allowed only while ``100 * (ejected + 1) / endpoints ≤ max_ejection_percent``, as in
  Envoy ≥ 1.31: with the default 10 % a cluster of fewer than 10 endpoints ejects nothing unless
  ``always_eject_one_host`` is set (then one endpoint may always be ejected). A refused ejection
  is counted in ``ejections_overflow``.
- An endpoint returns to service as soon as its ejection time has passed (Envoy waits for the
  next ``interval`` sweep; here no timer is needed). For every full ``interval`` an endpoint
  stays in service, its ejection multiplier decreases by one, so a recovered endpoint's next
  ejection is short again.

The detector is pure: the caller passes the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from sidecar_runtime import Duration

__all__ = ["OutlierConfig", "OutlierDetector", "RoundRobin"]

_GATEWAY_STATUSES = frozenset((502, 503, 504))


class OutlierConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``outlier_detection``: Envoy's consecutive-error detectors and ejection limits."""

    consecutive_5xx: Annotated[int, msgspec.Meta(ge=0)] = 5
    consecutive_gateway_errors: Annotated[int, msgspec.Meta(ge=0)] = 5
    base_ejection_time: Duration = Duration(30.0)
    max_ejection_time: Duration = Duration(300.0)
    max_ejection_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 10
    always_eject_one_host: bool = False
    interval: Duration = Duration(10.0)

    def __post_init__(self) -> None:
        for name in ("consecutive_5xx", "consecutive_gateway_errors"):
            if getattr(self, name) < 0:
                msg = f"{name}: must be 0 (off) or more, got {getattr(self, name)!r}"
                raise ValueError(msg)
        for name in ("base_ejection_time", "max_ejection_time", "interval"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                msg = f"{name}: must be more than 0, got {value!r}"
                raise ValueError(msg)
        if self.max_ejection_time < self.base_ejection_time:
            msg = (
                f"max_ejection_time: must be at least base_ejection_time "
                f"({self.base_ejection_time:g}s), got {self.max_ejection_time:g}s"
            )
            raise ValueError(msg)
        if not 0 <= self.max_ejection_percent <= 100:
            msg = f"max_ejection_percent: must be within 0..100, got {self.max_ejection_percent!r}"
            raise ValueError(msg)


@dataclass
class _Host:
    """What the detector knows of one endpoint."""

    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    multiplier: int = 0
    ejected_until: float | None = None
    healthy_since: float | None = None
    ejections: int = 0


class OutlierDetector:
    """Ejects endpoints that fail in a row, for a time that grows with each ejection."""

    def __init__(self, config: OutlierConfig, endpoints: Sequence[str]) -> None:
        if not endpoints:
            msg = "an outlier detector needs at least one endpoint"
            raise ValueError(msg)
        self.config = config
        self.endpoints = tuple(dict.fromkeys(endpoints))
        self._hosts = {endpoint: _Host() for endpoint in self.endpoints}
        self._ejected = 0
        self.ejections_total = 0
        self.ejections_overflow = 0
        self.ejections_5xx = 0
        self.ejections_gateway = 0

    def report(self, endpoint: str, *, status: int | None, error: bool, now: float) -> None:
        """Record one result: a response ``status``, or ``error=True`` for a local-origin failure.

        Results for unknown endpoints, and for endpoints that are ejected now, are ignored.
        """
        host = self._hosts.get(endpoint)
        if host is None:
            return
        self._advance(host, now)
        if host.ejected_until is not None:
            return
        config = self.config
        if error or (status is not None and status >= 500):
            gateway = error or status in _GATEWAY_STATUSES
            host.consecutive_gateway = host.consecutive_gateway + 1 if gateway else 0
            host.consecutive_5xx += 1
            if config.consecutive_gateway_errors and (
                host.consecutive_gateway >= config.consecutive_gateway_errors
            ):
                self._eject(endpoint, host, now, gateway=True)
            elif config.consecutive_5xx and host.consecutive_5xx >= config.consecutive_5xx:
                self._eject(endpoint, host, now, gateway=False)
        elif status is not None:
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0

    def _eject(self, endpoint: str, host: _Host, now: float, *, gateway: bool) -> None:
        host.consecutive_5xx = 0
        host.consecutive_gateway = 0
        self._advance_all(now)  # endpoints whose time is up no longer count as ejected
        config = self.config
        total = len(self._hosts)
        allowed = 100 * (self._ejected + 1) <= config.max_ejection_percent * total
        if not allowed and not (config.always_eject_one_host and self._ejected == 0):
            self.ejections_overflow += 1
            return
        host.multiplier += 1
        duration = min(config.base_ejection_time * host.multiplier, config.max_ejection_time)
        host.ejected_until = now + duration
        host.healthy_since = None
        host.ejections += 1
        self._ejected += 1
        self.ejections_total += 1
        if gateway:
            self.ejections_gateway += 1
        else:
            self.ejections_5xx += 1

    def _advance(self, host: _Host, now: float) -> None:
        """Return ``host`` to service when its time has passed; decay its multiplier."""
        if host.ejected_until is not None:
            if now < host.ejected_until:
                return
            host.healthy_since = host.ejected_until
            host.ejected_until = None
            self._ejected -= 1
        if host.multiplier and host.healthy_since is not None:
            interval = self.config.interval
            ticks = int((now - host.healthy_since) // interval)
            if ticks > 0:
                host.multiplier = max(0, host.multiplier - ticks)
                host.healthy_since += ticks * interval

    def _advance_all(self, now: float) -> None:
        for host in self._hosts.values():
            self._advance(host, now)

    def available(self, now: float) -> list[str]:
        """The endpoints in service at ``now``, in configuration order."""
        self._advance_all(now)
        return [e for e, host in self._hosts.items() if host.ejected_until is None]

    def ejected(self, now: float) -> list[str]:
        """The endpoints ejected at ``now``, in configuration order."""
        self._advance_all(now)
        return [e for e, host in self._hosts.items() if host.ejected_until is not None]

    def is_ejected(self, endpoint: str, now: float) -> bool:
        """True when ``endpoint`` is out of service at ``now``."""
        host = self._hosts.get(endpoint)
        if host is None:
            return False
        self._advance(host, now)
        return host.ejected_until is not None

    def ejected_until(self, endpoint: str) -> float | None:
        """When ``endpoint``'s current ejection ends (None when it was not ejected)."""
        host = self._hosts.get(endpoint)
        return None if host is None else host.ejected_until


class RoundRobin:
    """Round robin over the endpoints in service; all endpoints when none is (panic mode)."""

    def __init__(self, endpoints: Sequence[str], detector: OutlierDetector | None) -> None:
        if not endpoints:
            msg = "round robin needs at least one endpoint"
            raise ValueError(msg)
        self.endpoints = tuple(endpoints)
        self.detector = detector
        self._next = 0
        self.panics = 0

    def pick(self, now: float) -> str:
        """The next endpoint in turn that is in service at ``now``."""
        endpoints = self.endpoints
        count = len(endpoints)
        detector = self.detector
        if detector is not None:
            for step in range(count):
                index = (self._next + step) % count
                if not detector.is_ejected(endpoints[index], now):
                    self._next = index + 1
                    return endpoints[index]
            self.panics += 1
        index = self._next % count
        self._next = index + 1
        return endpoints[index]
